"""deploy/recipes/postgresql/hadeck-pg's commands, one at a time, against real PostgreSQL.

No agents here: each test puts the servers in the state a fault leaves them in (a
promotion under way, a new primary not promoted yet, a rewind cut short, a restart by a
distro unit) and runs the command the agent would, as the agent would (subprocess, its
--timeout), then reads the servers themselves.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import PgCluster, load_recipe, require_postgres
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cluster() -> Iterator[list[PgCluster]]:
    require_postgres()
    made: list[PgCluster] = []
    yield made
    for c in made:
        c.destroy()


def _make(made: list[PgCluster], members: list[str], synchronous: bool = False) -> PgCluster:
    c = PgCluster(members, synchronous=synchronous)
    made.append(c)
    return c.create()


def recipe(
    c: PgCluster, m: str, command: str, timeout: float, primary: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if primary is not None:
        env["HADECK_PRIMARY"] = primary
    return subprocess.run(
        c.recipe(m, command, timeout),
        capture_output=True,
        text=True,
        timeout=timeout + 30,
        env=env,
    )


def _startup_process(c: PgCluster, m: str) -> int:
    """The server's startup process: the one that replays WAL, and ends a promotion."""
    for pid in c.processes(m):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"postgres: startup"):
                return pid
    raise AssertionError(f"{m} has no startup process: {c.processes(m)}")


def _status(c: PgCluster, m: str) -> str:
    """The postmaster's own status line in postmaster.pid (starting, ready, stopping)."""
    try:
        lines = (c.data(m) / "postmaster.pid").read_text().splitlines()
    except OSError:
        return "gone"
    return lines[7].strip() if len(lines) > 7 else ""


def test_demote_stops_a_standby_whose_promotion_is_still_under_way(
    cluster: list[PgCluster],
) -> None:
    """pg_promote gave up waiting (here its startup process is frozen), the hook failed,
    the agent demotes: the server is still in recovery, but the promotion is requested and
    would finish after the key is released. Demote must stop it, not call it a standby."""
    c = _make(cluster, ["m1", "m2"])
    c.stop("m1", "fast")
    startup = _startup_process(c, "m2")
    os.kill(startup, signal.SIGSTOP)
    try:
        done = recipe(c, "m2", "promote", 3)
        assert done.returncode == 1 and "did not finish" in done.stderr, done.stderr
        assert c.writable("m2") is False  # still in recovery, the promotion pending
        result: list[subprocess.CompletedProcess[str]] = []
        demoting = threading.Thread(target=lambda: result.append(recipe(c, "m2", "demote", 10)))
        demoting.start()
        wait_for(lambda: result or _status(c, "m2") == "stopping", 15, "demote to act")
    finally:
        os.kill(startup, signal.SIGCONT)
    demoting.join(30)
    assert result and result[0].returncode == 0, result
    assert "already a standby" not in result[0].stdout
    assert c.writable("m2") is None and c.postmaster("m2") is None
    # Started again (as the recovery ladder would), the old request is void.
    assert recipe(c, "m2", "start", 20).returncode == 0
    wait_for(lambda: c.writable("m2") is not None, 20, "m2 answering")
    assert c.writable("m2") is False


def test_follow_leaves_a_standby_alone_until_the_new_primary_is_writable(
    cluster: list[PgCluster],
) -> None:
    """The follow hook of a standby that sees a new lease before its holder has promoted:
    nothing is stopped or repointed at a server in recovery; once it is promoted, the
    standby streams from it."""
    c = _make(cluster, ["m1", "m2", "m3"])
    before = c.postmaster("m3")
    done = recipe(c, "m3", "follow", 4, primary="m2")
    assert done.returncode == 1, done.stdout
    assert "m2 is still in recovery" in done.stderr and "left as it is" in done.stderr
    assert c.postmaster("m3") == before
    assert "m3" in {a for a, _ in c.streaming_to("m1")}

    c.stop("m1", "fast")
    result: list[subprocess.CompletedProcess[str]] = []
    following = threading.Thread(
        target=lambda: result.append(recipe(c, "m3", "follow", 40, primary="m2"))
    )
    following.start()
    assert recipe(c, "m2", "promote", 20).returncode == 0
    following.join(60)
    assert result and result[0].returncode == 0, result[0].stderr if result else "no result"
    assert "m3" in {a for a, _ in c.streaming_to("m2")}
    assert c.writable("m3") is False


def test_a_rewind_cut_short_is_never_started_and_is_recloned_when_allowed(
    cluster: list[PgCluster],
) -> None:
    c = _make(cluster, ["m1", "m2"])
    c.stop("m2", "fast")
    marker = c.dir / ".hadeck-pg-m2.rewinding"  # what a pg_rewind killed mid-way leaves
    marker.write_text("2026-12-03T04:00:00+0000\n")
    done = recipe(c, "m2", "start", 10)
    assert done.returncode == 1 and "cut short" in done.stderr, done.stderr
    assert c.postmaster("m2") is None

    settings = c.settings("m2")
    settings.write_text(settings.read_text().replace("reclone = true", "reclone = false"))
    done = recipe(c, "m2", "follow", 30, primary="m1")
    assert done.returncode == 1 and "re-clone it" in done.stderr, done.stderr
    assert c.postmaster("m2") is None

    settings.write_text(settings.read_text().replace("reclone = false", "reclone = true"))
    done = recipe(c, "m2", "follow", 40, primary="m1")
    assert done.returncode == 0 and "re-cloned" in done.stdout, done.stderr
    assert not marker.exists()
    assert list(c.dir.glob("m2.before-reclone-*")), "the old directory kept aside"
    assert "m2" in {a for a, _ in c.streaming_to("m1")}
    assert c.writable("m2") is False


def _state(c: PgCluster, m: str) -> Path:
    return c.dir / f"hadeck-pg-{m}.json"


@pytest.mark.parametrize("sight", ["none", "old", "unreadable"])
def test_synchronous_lag_refuses_without_a_recent_sight_of_the_primarys_standbys(
    cluster: list[PgCluster], sight: str
) -> None:
    """Synchronous: the primary and m3 gone, m2 answers. Whether m2 may hold every
    acknowledged commit depends on whether m3 streamed at the last sight; without a
    trustworthy sight, m3 may have acknowledged commits m2 lacks: no lag, no promotion."""
    c = _make(cluster, ["m1", "m2", "m3"], synchronous=True)
    wait_for(lambda: len(c.streaming_to("m1")) == 2, 20, "both standbys streaming")
    done = recipe(c, "m2", "lag", 4)
    assert done.returncode == 0, done.stderr
    seen = json.loads(_state(c, "m2").read_text())
    assert sorted(seen["streaming"]) == ["m2", "m3"]
    c.stop("m3")
    c.stop("m1")
    if sight == "none":
        _state(c, "m2").unlink()
    elif sight == "old":
        _state(c, "m2").write_text(json.dumps({**seen, "at": time.time() - 3600}))
    else:
        _state(c, "m2").write_text(json.dumps({**seen, "streaming": None}))
    done = recipe(c, "m2", "lag", 4)
    assert done.returncode == 1, done.stdout
    assert "m1, m3 do not answer" in done.stderr and "acknowledged commits" in done.stderr

    # m3 back: only the old primary is missing, and its acknowledged commits are on a
    # standby that answers, whatever the sight.
    c.start("m3")
    wait_for(lambda: c.writable("m3") is False, 20, "m3 answering")
    done = recipe(c, "m2", "lag", 4)
    assert done.returncode == 0, done.stderr
    c.stop("m3")

    # A recent sight in which m3 did not stream: m3 cannot hold a commit m2 lacks.
    _state(c, "m2").write_text(json.dumps({**seen, "streaming": ["m2"], "at": time.time()}))
    done = recipe(c, "m2", "lag", 4)
    assert done.returncode == 0 and done.stdout.strip() == "0", done.stderr


def test_a_promoted_server_restarted_outside_hadeck_comes_back_read_only(
    cluster: list[PgCluster],
) -> None:
    """A primary promoted by hadeck-pg crashes; a distro unit or a reboot starts it with a
    plain pg_ctl start. It must not come back writable beside the next primary."""
    c = _make(cluster, ["m1", "m2"])
    c.stop("m1")
    assert recipe(c, "m2", "promote", 20).returncode == 0
    assert c.writable("m2") is True
    killed = c.processes("m2")
    c.crash("m2")
    # Gone, as after a reboot (a zombie postmaster still holds its lock file).
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in killed), 60, "m2 reaped")
    c.start("m2")  # pg_ctl start, not hadeck-pg
    assert c.writable("m2") is False


def test_primary_conninfo_written_for_a_stopped_server_reads_back_unchanged(
    cluster: list[PgCluster],
) -> None:
    """Quotes and backslashes in a value: PostgreSQL's own parser reads postgresql.auto.conf
    back to the conninfo hadeck-pg meant."""
    pg = load_recipe()
    c = _make(cluster, ["m1", "m2"])
    c.stop("m2", "fast")
    settings = c.settings("m2")
    settings.write_text(
        settings.read_text().replace(
            'member = "m2"', 'member = "m2"\nreplication_user = "o\'b\\\\x y"'
        )
    )
    s = pg.load(settings)
    assert s.replication_user == "o'b\\x y"
    pg._set_primary_conninfo(s, s.servers["m1"])
    conf = c.conf_dir("m2") / "postgresql.conf"
    shown = c.run([str(c.bin / "postgres"), "-D", str(c.data("m2")), "-c",
                   f"config_file={conf}", "-C", "primary_conninfo"])  # fmt: skip
    assert shown.stdout.strip() == s.replication_conninfo(s.servers["m1"])


def test_a_killed_primary_whose_conninfo_names_the_new_primary_rejoins(
    cluster: list[PgCluster],
) -> None:
    """Benchmark fault 8 (kill-host): the former primary, a standby of m2 once, still had
    m2 in primary_conninfo. Its crash recovery before pg_rewind streamed m2's new timeline
    on top of its own WAL; stopped right after, it never started again ("WAL location ...
    belongs to timeline 1, but previous recovered WAL file came from timeline 2") and every
    follow failed. Crash recovery replays the local WAL only."""
    c = _make(cluster, ["m1", "m2", "m3"])
    with c.connect("m1") as conn:
        info = f"host=127.0.0.1 port={c.ports['m2']} user=postgres application_name=m1"
        conn.execute(f"alter system set primary_conninfo = '{info}'")
        conn.execute("insert into writes select n, now() from generate_series(1, 2000) n")
    wait_for(lambda: len(c.rows("m2")) == 2000, 20, "m2 caught up")
    killed = c.processes("m1")
    c.crash("m1")
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in killed), 60, "m1 reaped")
    assert recipe(c, "m2", "promote", 20).returncode == 0
    with c.connect("m2") as conn:
        conn.execute("insert into writes select n, now() from generate_series(2001, 4000) n")
    settings = c.settings("m1")
    settings.write_text(settings.read_text().replace("reclone = true", "reclone = false"))
    done = recipe(c, "m1", "follow", 50, primary="m2")
    assert done.returncode == 0, done.stderr
    assert "m1" in {a for a, _ in c.streaming_to("m2")}
    wait_for(lambda: len(c.rows("m1")) == 4000, 20, "m1 has m2's writes")


def test_a_directory_that_does_not_start_is_recloned_when_allowed(
    cluster: list[PgCluster],
) -> None:
    """Whatever keeps a rewound (or untouched) standby from starting, here a broken line in
    its postgresql.auto.conf: with reclone off, follow fails naming the server's log; on,
    the directory is moved aside and a fresh copy of the primary streams."""
    c = _make(cluster, ["m1", "m2"])
    c.stop("m2", "fast")
    auto = c.data("m2") / "postgresql.auto.conf"
    auto.write_text(auto.read_text() + "this is not a setting\n")
    settings = c.settings("m2")
    settings.write_text(settings.read_text().replace("reclone = true", "reclone = false"))
    done = recipe(c, "m2", "follow", 30, primary="m1")
    assert done.returncode == 1 and str(c.log("m2")) in done.stderr, done.stderr
    settings.write_text(settings.read_text().replace("reclone = false", "reclone = true"))
    done = recipe(c, "m2", "follow", 40, primary="m1")
    assert done.returncode == 0 and "re-cloned" in done.stdout, done.stderr
    assert list(c.dir.glob("m2.before-reclone-*")), "the old directory kept aside"
    assert "m2" in {a for a, _ in c.streaming_to("m1")}
