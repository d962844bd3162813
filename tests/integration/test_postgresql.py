"""Real PostgreSQL streaming replication under hadeck, through the recipe.

Three servers (initdb, pg_basebackup) on loopback, each with its own agent that drives it
only through deploy/recipes/postgresql/hadeck-pg; a real etcd holds the lease; a real
HAProxy routes clients to whichever member's `/groups/pg/primary` answers 200. During
every scenario a checker reads each server's real role (pg_is_in_recovery()) every 50 ms
and one polls the routing endpoints: no round may see two writable servers or two
primaries. A writer sends numbered rows through HAProxy and keeps the numbers the server
acknowledged; with synchronous replication, every one must be on the new primary.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from console.demo.component import stop_all
from tests.support.agent import AgentProcess
from tests.support.etcd import EtcdServer
from tests.support.groups import Member, SplitBrainChecker, new_primary, one_primary
from tests.support.haproxy import Backend, HaproxyProcess, Server
from tests.support.postgres import (
    PgCluster,
    RoleChecker,
    Writer,
    pg_member_config,
    require_postgres,
)
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(240)

NAMES = ["m1", "m2", "m3"]


class PgGroup:
    def __init__(
        self, cluster: PgCluster, members: list[Member], proxy: HaproxyProcess, port: int
    ) -> None:
        self.cluster, self.members, self.proxy, self.port = cluster, members, proxy, port

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def ready(self, timeout: float = 90) -> Member:
        """A primary every other member streams from."""
        first = wait_for(lambda: one_primary(self.members), timeout, "a primary")
        others = {m.name for m in self.members} - {first.name}
        wait_for(
            lambda: {a for a, _ in self._streaming(first.name)} >= others,
            timeout,
            f"every standby streaming from {first.name}",
        )
        return first

    def _streaming(self, m: str) -> list[tuple[str, str]]:
        try:
            return self.cluster.streaming_to(m)
        except Exception:
            return []

    def streams_from(self, primary: str, standby: str, timeout: float = 90) -> None:
        wait_for(
            lambda: standby in {a for a, _ in self._streaming(primary)},
            timeout,
            f"{standby} streaming from {primary}",
        )


@pytest.fixture
def pg_group(
    tmp_path: Path, etcd: EtcdServer, start_haproxy: Callable[[list[Backend]], HaproxyProcess]
) -> Iterator[Callable[..., PgGroup]]:
    require_postgres()
    made: list[tuple[PgCluster, list[Member]]] = []

    def start(synchronous: bool = True, **kw: Any) -> PgGroup:
        cluster = PgCluster(NAMES, synchronous=synchronous)
        members: list[Member] = []
        made.append((cluster, members))
        cluster.create()
        store = {"kind": "etcd", "endpoints": [etcd.url], "timeout": "1s"}
        for i, name in enumerate(NAMES):
            d = tmp_path / name
            d.mkdir()
            cfg = pg_member_config(name, cluster, store, priority=100 - i, **kw)
            members.append(Member(name, AgentProcess(d, cfg), None))
        backend = Backend(
            "pg",
            "/groups/pg/primary",
            [Server(m.name, cluster.ports[m.name], m.agent.public_port) for m in members],
        )
        proxy = start_haproxy([backend])
        for m in members:
            m.agent.start()
        return PgGroup(cluster, members, proxy, backend.port)

    yield start
    errors: list[str] = []
    for cluster, members in made:
        errors += stop_all(m.agent.component for m in members)
        cluster.destroy(keep_logs=tmp_path)
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


def _lost(g: PgGroup, writer: Writer, primary: str) -> list[int]:
    on_primary = g.cluster.rows(primary)
    return sorted(set(writer.acked) - on_primary)


def _more_writes(writer: Writer, after: int, timeout: float = 60) -> None:
    wait_for(lambda: len(writer.acked) > after + 50, timeout, "writes acknowledged again")


@pytest.mark.parametrize("restart", [False, True], ids=["left-down", "restarted"])
def test_killed_primary_postgres_fails_over_without_losing_a_write_and_rejoins(
    pg_group: Callable[..., PgGroup], restart: bool
) -> None:
    """Every process of the primary's server SIGKILLed. Left down, a standby is promoted
    and the old primary's follow hook brings it back (crash recovery as a standby,
    pg_rewind). Restarted by the recovery ladder, as the shipped agent.yaml does, it comes
    back read-only at once; holding the most WAL, it may rightly be promoted again; either
    way one primary, every acknowledged write on it, every other member streaming from it."""
    g = pg_group(recovery=restart)
    with SplitBrainChecker(g.members), RoleChecker(g.cluster) as roles:
        first = g.ready()
        with Writer(g.port).running() as writer:
            _more_writes(writer, 0)
            at_fault = len(writer.acked)
            token = first.status()["token"]
            g.cluster.crash(first.name)
            wait_for(
                lambda: any((m.status()["token"] or 0) > token for m in g.members),
                60,
                "a new lease",
            )
            _more_writes(writer, at_fault)
            second = wait_for(lambda: one_primary(g.members), 60, "a primary")
        assert writer.acked, "the writer never got an acknowledgement"
        assert _lost(g, writer, second.name) == []
        for m in g.members:
            if m is not second:
                g.streams_from(second.name, m.name)
                assert g.cluster.writable(m.name) is False
        if not restart:
            assert second is not first

            def followed() -> list[dict[str, Any]]:
                return [
                    a for a in first.agent.get("/api/v1/audit", limit=500)
                    if a["action"] == "group_follow" and a["params"]["primary"] == second.name
                    and a["result"]["follow"]["exit_code"] == 0
                ]  # fmt: skip

            wait_for(followed, 60, f"{first.name}'s follow hook done")
    assert roles.rounds > 20  # every member watched through the whole scenario


def test_switchover_moves_the_primary_without_losing_a_write(
    pg_group: Callable[..., PgGroup],
) -> None:
    g = pg_group()
    with SplitBrainChecker(g.members), RoleChecker(g.cluster):
        first = g.ready()
        target = next(m for m in g.members if m is not first)
        for m in g.members:
            wait_for(lambda m=m: len(m.status()["members"]) == 3, 20, f"{m.name} sees all")
        with Writer(g.port).running() as writer:
            _more_writes(writer, 0)
            at_switch = len(writer.acked)
            r = target.agent.post(
                "/api/v1/groups/pg/switchover", actor="alice", json={"to": target.name}
            )
            op = target.agent.finished(r, timeout=60)
            assert op["state"] == "succeeded", op
            assert one_primary(g.members) is target
            _more_writes(writer, at_switch)
        assert _lost(g, writer, target.name) == []
        g.streams_from(target.name, first.name)


def test_a_standby_lagging_more_than_max_lag_is_never_promoted(
    pg_group: Callable[..., PgGroup],
) -> None:
    """Asynchronous replication, max_lag 64 KiB: one standby stops receiving WAL, ~1 MiB is
    written, the other standby and then the primary stop. The lagging one is the only
    candidate left: no primary, rather than one that lost the last megabyte; the other
    back, it is promoted."""
    g = pg_group(synchronous=False, max_lag=65536, recovery=False)
    with SplitBrainChecker(g.members), RoleChecker(g.cluster):
        first = g.ready()
        good, behind = (m for m in g.members if m is not first)
        with g.cluster.connect(behind.name) as conn:
            conn.execute("alter system set primary_conninfo = ''")
            conn.execute("select pg_reload_conf()")
        wait_for(
            lambda: behind.name not in {a for a, _ in g.cluster.streaming_to(first.name)},
            20,
            f"{behind.name} cut off",
        )
        with g.cluster.connect(first.name) as conn:
            conn.execute("insert into writes select n, now() from generate_series(1, 20000) n")

        def refused() -> dict[str, Any] | None:
            me = next(r for r in behind.status()["members"] if r["member"] == behind.name)
            return me if "exceeds max_lag" in me["note"] else None

        wait_for(refused, 30, f"{behind.name} refusing for its lag")
        g.cluster.stop(good.name, "fast")
        g.cluster.stop(first.name, "immediate")
        wait_for(lambda: first.status()["role"] == "standby", 30, "the primary stepped down")
        wait_for(lambda: behind.status()["leader"] is None, 30, "the key free")
        free = time.time()

        def loops_later() -> bool:
            me = refused()
            return me is not None and me["updated_at"] > free + 4

        # It says why on every loop, and stays a standby.
        wait_for(loops_later, 30, f"{behind.name} refusing for 4 s with the key free")
        assert behind.status()["leader"] is None
        assert g.cluster.writable(behind.name) is False
        g.cluster.start(good.name)
        assert new_primary(g.members, first, 60) is good
        # It follows the new primary (its server may restart meanwhile: None, unreachable),
        # and is never writable.
        answered = wait_for(
            lambda: (w := g.cluster.writable(behind.name)) is not None and [w], 30, "m3 to answer"
        )
        assert answered == [False]


def test_a_frozen_primary_agent_is_fenced_before_a_standby_promotes(
    pg_group: Callable[..., PgGroup],
) -> None:
    """SIGSTOP on the primary's agent: its fencing process stops PostgreSQL at the lease
    deadline, before the lease can expire; the new primary has every acknowledged row; the
    old agent, thawed, steps down and its server rejoins as a standby."""
    g = pg_group()
    with SplitBrainChecker(g.members), RoleChecker(g.cluster) as roles:
        first = g.ready()
        with Writer(g.port).running() as writer:
            _more_writes(writer, 0)
            at_fault = len(writer.acked)
            first.agent.freeze()
            try:
                second = new_primary(g.members, first, 60)
                assert g.cluster.writable(first.name) is None  # fenced: not even up
                _more_writes(writer, at_fault)
            finally:
                first.agent.thaw()
        assert _lost(g, writer, second.name) == []
        g.streams_from(second.name, first.name)
        assert g.cluster.writable(first.name) is False
    assert roles.rounds > 20  # it watched the whole scenario
