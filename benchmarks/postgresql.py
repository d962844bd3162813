"""PostgreSQL under hadeck, and under Patroni beside it: lost acknowledged writes and time to
a writable primary, fault by fault.

Targets (issue 10): with synchronous replication, 0 lost acknowledged writes over at least
50 faults; 0 samples with two writable servers; side by side with Patroni, in one run on
one machine, hadeck's time to a writable primary <= Patroni's (p50, every fault kind).

Three real PostgreSQL servers (tests/support/postgres.py: initdb, pg_basebackup, loopback,
synchronous_standby_names = 'ANY 1 (...)'), each driven by its own agent through
deploy/recipes/postgresql/hadeck-pg, ttl `--ttl` (20 s), loop_wait 2 s, leases in a real etcd that
each agent reaches through its own proxy (tests/support/proxy.py, which can black-hole
the traffic), a real HAProxy routing clients to the member whose `/groups/pg/primary`
answers 200. A writer inserts numbered rows through HAProxy as fast as one client can and
keeps every number the server acknowledged; a checker reads every server's
pg_is_in_recovery() every 50 ms for the whole run.

Four kinds of fault, `--faults` each, in turn, always on the current primary:

- kill-postgres: SIGKILL of the primary's postmaster and its children;
- freeze-agent: SIGSTOP of the primary's agent (its fencing process fences PostgreSQL);
- partition: the primary's agent cut off from etcd;
- kill-host: SIGKILL of every process of the primary's "host": agent, fencing process,
  postmaster and its children.

Per fault: the time from the fault to the first write acknowledged through HAProxy after
the first write the fault made fail (a frozen primary's server takes writes until it is
fenced: the time counts until the new primary takes them). Once a new primary has taken
writes, the fault is undone (agent thawed or restarted, proxy healed) and the group
settles (every standby streaming from the primary) before the next. At the end, every
acknowledged number must be on the last primary: each one missing is a lost write.

Per fault, also: the acknowledged writes missing on the new primary (with synchronous
replication there must be none; `--replication async --max-lag BYTES` measures what
asynchronous replication loses against its limit, hadeck only), and hadeck's handover
steps from the promotion's record (detect, wait, acquire, route, promote), so the time
to writable again can be told apart into what the agents did and what came after
(HAProxy's check, a synchronous standby following). `--kinds` runs some kinds only.

`--systems hadeck,patroni` runs the same faults against Patroni (benchmarks/_patroni.py:
the same servers' settings, etcd through the same proxies, HAProxy on Patroni's
`/primary`, the same ttl, loop_wait 2 s), one system after the other; freeze-agent then
freezes Patroni, kill-host kills Patroni and its server.

    .venv/bin/python benchmarks/postgresql.py [--faults 13] [--systems hadeck,patroni]
        [--kinds kill-host,...] [--replication async --max-lag 1048576]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import _patroni
import httpx
from _harness import REPO, BenchmarkError, machine, percentile, run_benchmark, table

from console.demo.component import ComponentError, free_port

# The tests' PostgreSQL cluster, writer and role checker: the same harness, measured here.
sys.path.insert(0, str(REPO))
from tests.support.agent import AgentProcess
from tests.support.etcd import EtcdServer
from tests.support.groups import Member, one_primary
from tests.support.haproxy import Backend, HaproxyProcess, Server
from tests.support.postgres import PgCluster, RoleChecker, Writer, pg_member_config
from tests.support.proxy import BlackHoleProxy


class Agent(Protocol):
    """A member's HA agent process (hadeck's AgentProcess, Patroni's Component)."""

    def freeze(self) -> None: ...
    def thaw(self) -> None: ...
    def kill(self) -> int | None: ...
    def start(self) -> object: ...


NAMES = ["m1", "m2", "m3"]
KINDS = ["kill-postgres", "freeze-agent", "partition", "kill-host"]
SETTLE = 120.0
STEPS = ["detect", "wait", "acquire", "route", "promote"]


@dataclass(frozen=True)
class Setup:
    """What every system in one run shares."""

    ttl: int = 20
    kinds: tuple[str, ...] = tuple(KINDS)
    synchronous: bool = True
    #: Bytes a standby may lag and still be promoted (hadeck's max_lag).
    max_lag: int = 0


class KeyWatch:
    """The system's leader key in etcd, read every 50 ms (directly, not through a member's
    proxy): when, after a fault, the old holder's key was gone (expired, released or
    replaced), which tells the lease's share of the time to writable again from what came
    after it (promotion, HAProxy's check, a synchronous standby following)."""

    def __init__(self, url: str, key: str) -> None:
        self._key = base64.b64encode(key.encode()).decode()
        self._client = httpx.Client(base_url=url, timeout=0.5, trust_env=False)
        self.seen: list[tuple[float, int | None]] = []  # (monotonic, create_revision)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                kvs = self._client.post("/v3/kv/range", json={"key": self._key}).json()
            except (httpx.HTTPError, ValueError):
                continue
            kv = (kvs.get("kvs") or [None])[0]
            rev = int(kv["create_revision"]) if kv else None
            if not self.seen or self.seen[-1][1] != rev:
                self.seen.append((time.monotonic(), rev))

    def gone_after(self, at: float) -> float | None:
        """Seconds from `at` until the key held at `at` was gone, if it went."""
        held = next((rev for t, rev in reversed(self.seen) if t <= at), None)
        if held is None:
            return None
        gone = next((t for t, rev in self.seen if t > at and rev != held), None)
        return None if gone is None else round(gone - at, 3)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._client.close()


class Bench:
    """One system's group: three servers, etcd through a proxy per member, HAProxy."""

    system = ""
    #: The system's leader key in etcd.
    leader_key = ""

    def __init__(self, root: Path, setup: Setup) -> None:
        self.root, self.setup, self.ttl = root, setup, setup.ttl
        self.etcd = EtcdServer(root / "etcd")
        self.cluster = PgCluster(NAMES, synchronous=setup.synchronous)
        self.proxies: dict[str, BlackHoleProxy] = {}
        self.haproxy: HaproxyProcess | None = None
        self.port = 0

    def _proxies(self) -> None:
        upstream = int(self.etcd.url.rsplit(":", 1)[1])
        for name in NAMES:
            self.proxies[name] = BlackHoleProxy(upstream).__enter__()

    def _route(self, path: str, check_ports: dict[str, int]) -> None:
        backend = Backend(
            "pg", path, [Server(n, self.cluster.ports[n], check_ports[n]) for n in NAMES]
        )
        self.haproxy = HaproxyProcess(self.root / "haproxy", [backend]).start()
        self.port = backend.port

    def _stop_common(self) -> None:
        if self.haproxy is not None:
            self.haproxy.stop()
        for proxy in self.proxies.values():
            proxy.__exit__()
        self.cluster.destroy(keep_logs=self.root)
        self.etcd.stop()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def primary(self) -> str | None:
        raise NotImplementedError

    def agent(self, member: str) -> Agent:
        """The member's HA agent: what freeze-agent freezes and kill-host kills."""
        raise NotImplementedError

    def host_pids(self, member: str) -> list[int]:
        """Every other process of the member's "host" that kill-host kills."""
        return self.cluster.processes(member)

    def inject(self, kind: str, primary: str) -> Callable[[], None]:
        """Starts the fault; returns what undoes it."""
        agent = self.agent(primary)
        if kind == "kill-postgres":
            self.cluster.crash(primary)
            return lambda: None
        if kind == "freeze-agent":
            agent.freeze()
            return agent.thaw
        if kind == "partition":
            self.proxies[primary].cut()
            return self.proxies[primary].heal
        if kind == "kill-host":
            pids = self.host_pids(primary)
            agent.kill()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

            def restart() -> None:
                agent.start()

            return restart
        raise ValueError(kind)

    def steady(self, hold: float = 3.0) -> Callable[[], str | None]:
        """`settled` without a break for `hold` seconds: a restarted standby streams from
        its old upstream for a moment before it follows the new primary."""
        since: list[tuple[str, float]] = []

        def check() -> str | None:
            p = self.settled()
            if p is None or (since and since[0][0] != p):
                since.clear()
                return None
            if not since:
                since.append((p, time.monotonic()))
            return p if time.monotonic() - since[0][1] >= hold else None

        return check

    def steps(self, member: str) -> dict[str, float] | None:
        """The handover steps of `member`'s latest promotion, where the system records them."""
        return None

    def settled(self) -> str | None:
        """The primary, once every other member streams from it."""
        p = self.primary()
        if p is None:
            return None
        try:
            streaming = {a for a, _ in self.cluster.streaming_to(p)}
        except Exception:
            return None
        return p if streaming >= set(NAMES) - {p} else None


class HadeckBench(Bench):
    """Each server driven by its own agent through deploy/recipes/postgresql/hadeck-pg."""

    system = "hadeck"
    leader_key = "/hadeck/pg/leader"

    def __init__(self, root: Path, setup: Setup) -> None:
        super().__init__(root, setup)
        self.agents: dict[str, AgentProcess] = {}

    def start(self) -> None:
        self.etcd.start()
        self.cluster.create()
        self._proxies()
        for i, name in enumerate(NAMES):
            store = {"kind": "etcd", "endpoints": [self.proxies[name].url], "timeout": "1s"}
            d = self.root / name
            d.mkdir()
            cfg = pg_member_config(
                name,
                self.cluster,
                store,
                priority=100 - i,
                ttl=f"{self.ttl}s",
                max_lag=self.setup.max_lag,
            )
            cfg["agent"]["log_level"] = "info"
            self.agents[name] = AgentProcess(d, cfg)
        self._route("/groups/pg/primary", {n: a.public_port for n, a in self.agents.items()})
        for agent in self.agents.values():
            agent.start()

    def stop(self) -> None:
        for agent in self.agents.values():
            with contextlib.suppress(ComponentError):
                agent.component.stop()
        self._stop_common()

    def primary(self) -> str | None:
        """The one member answering 200 on its primary endpoint, if exactly one does."""
        one = one_primary([Member(n, a, None) for n, a in self.agents.items()])
        return one.name if one is not None else None

    def agent(self, member: str) -> Agent:
        return self.agents[member]

    def steps(self, member: str) -> dict[str, float] | None:
        try:
            promoted = self.agents[member].events("group_promoted")
        except (httpx.HTTPError, ComponentError):
            return None
        return promoted[-1]["evidence"].get("steps") if promoted else None

    def host_pids(self, member: str) -> list[int]:
        return fencer_pids(self.agents[member]) + super().host_pids(member)


class PatroniBench(Bench):
    """Each server run by its own Patroni (benchmarks/_patroni.py)."""

    system = "patroni"
    leader_key = "/service/bench/leader"

    def __init__(self, root: Path, setup: Setup) -> None:
        super().__init__(root, setup)
        self.members: dict[str, _patroni.PatroniMember] = {}
        self.client = httpx.Client(timeout=0.5, trust_env=False)

    def start(self) -> None:
        patroni = _patroni.install(Path("/tmp/hadeck-bench-patroni"))
        self.etcd.start()
        self._proxies()
        home = self.cluster.dir / "patroni"
        for name in NAMES:
            cfg = _patroni.config(
                name,
                self.ttl,
                home,
                self.cluster.data(name),
                self.cluster.ports[name],
                free_port(),
                self.proxies[name].url.removeprefix("http://"),
                self.cluster.bin,
                self.cluster.dir,
            )
            self.members[name] = _patroni.PatroniMember(name, patroni, cfg, home)
        self._route("/primary", {n: m.api_port for n, m in self.members.items()})
        first = self.members[NAMES[0]]
        first.component.start()
        wait(f"{first.name} bootstrapped as primary", self.primary, SETTLE)
        with self.cluster.connect(first.name) as conn:
            conn.execute("create table writes (n bigint primary key, at timestamptz)")
        for name in NAMES[1:]:
            self.members[name].component.start()

    def stop(self) -> None:
        for m in self.members.values():
            with contextlib.suppress(ComponentError):
                m.component.stop()
        self.client.close()
        home = self.cluster.dir / "patroni"
        if home.exists():  # Patroni's logs and its servers', to read after the run
            shutil.copytree(home, self.root / "patroni", dirs_exist_ok=True)
        self._stop_common()

    def primary(self) -> str | None:
        up = []
        for name, m in self.members.items():
            with contextlib.suppress(httpx.HTTPError):
                if self.client.get(f"{m.url}/primary").status_code == 200:
                    up.append(name)
        return up[0] if len(up) == 1 else None

    def agent(self, member: str) -> Agent:
        return self.members[member].component


SYSTEMS: dict[str, type[Bench]] = {"hadeck": HadeckBench, "patroni": PatroniBench}


def wait(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := check():
            return got
        time.sleep(0.1)
    raise BenchmarkError(f"timed out after {timeout:g}s waiting for {what}")


def fencer_pids(agent: AgentProcess) -> list[int]:
    marker = str(agent.state_dir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes()
                if b"agent.failover.fencer" in cmdline and marker in cmdline:
                    found.append(int(entry.name))
    return found


def after(writer: Writer, at: float) -> Callable[[], float | None]:
    return lambda: writer.writable_again(at)


def measure(system: str, faults: int, setup: Setup) -> dict[str, Any]:
    """One system's run. A fault it does not recover from within SETTLE ends its run: the
    figures so far are kept, with what it was waiting for (`stuck`)."""
    root = Path(tempfile.mkdtemp(prefix=f"hadeck-bench-pg-{system}-"))
    b = SYSTEMS[system](root, setup)
    times: dict[str, list[float]] = {k: [] for k in setup.kinds}
    per_fault: list[dict[str, Any]] = []
    stuck: str | None = None
    try:
        b.start()
        wait("a settled group", b.settled, SETTLE)
        keys = KeyWatch(b.etcd.url, b.leader_key)
        with (
            contextlib.closing(keys),
            RoleChecker(b.cluster) as roles,
            Writer(b.port).running() as writer,
        ):
            try:
                wait("writes through HAProxy", lambda: len(writer.acked) > 50, 60)
                stuck = _faults(system, b, writer, faults, times, per_fault, keys)
                last = b.settled() if stuck else wait("a settled group", b.settled, SETTLE)
                wal = _wal_bytes(b, last)
            finally:
                # The roles' checker must not raise before the writer has stopped.
                double = list(roles.double)
                roles.double.clear()
        last = last or b.primary()
        lost = sorted(set(writer.acked) - b.cluster.rows(last)) if last else None
        return {
            "times": times,
            "lost": lost,
            "acked": len(writer.acked),
            "double": double,
            "rounds": roles.rounds,
            "ttl": setup.ttl,
            "stuck": stuck,
            "per_fault": per_fault,
            "wal_per_write": round(wal / len(writer.acked), 1) if wal and writer.acked else None,
            "synchronous": setup.synchronous,
            "max_lag": setup.max_lag,
        }
    finally:
        b.stop()


def _wal_bytes(b: Bench, primary: str | None) -> int | None:
    """WAL the whole run wrote, as the last primary counts it."""
    if primary is None:
        return None
    try:
        with b.cluster.connect(primary) as conn:
            row = conn.execute("select pg_current_wal_lsn() - '0/0'").fetchone()
    except Exception:
        return None
    return int(row[0]) if row else None


def _faults(
    system: str,
    b: Bench,
    writer: Writer,
    faults: int,
    times: dict[str, list[float]],
    per_fault: list[dict[str, Any]],
    keys: KeyWatch,
) -> str | None:
    kinds = list(times)
    missing: set[int] = set()
    for i in range(faults):
        for kind in kinds:
            n = i * len(kinds) + kinds.index(kind) + 1
            try:
                old = wait("a settled group", b.steady(), SETTLE)
            except BenchmarkError as exc:
                return f"before fault {n}: {exc}"
            at = time.monotonic()
            undo = b.inject(kind, old)
            try:
                first = wait("a write after the fault", after(writer, at), SETTLE)
                times[kind].append(first - at)
                # A killed server restarted at once may hold the most WAL and rightly be
                # primary again: any primary will do.
                new = wait("a primary", b.primary, 60)
                acked = list(writer.acked)
                lost = set(acked) - b.cluster.rows(new) - missing
            except BenchmarkError as exc:
                return f"fault {n} ({kind} on {old}): {exc}"
            finally:
                undo()
            missing |= lost
            steps = b.steps(new) if new != old else None
            key_gone = keys.gone_after(at)
            per_fault.append(
                {"kind": kind, "on": old, "to": new, "s": round(first - at, 3),
                 "lost": len(lost), "steps": steps, "key_gone": key_gone}
            )  # fmt: skip
            print(
                f"  {system} fault {n}: {kind} on {old}: writable again after "
                f"{times[kind][-1]:.2f} s on {new}, {len(lost)} acknowledged writes lost"
                + (f"; old key gone after {key_gone:.2f} s" if key_gone is not None else "")
                + (f"; steps {steps}" if steps else ""),
                file=sys.stderr,
            )
    return None


def _step_medians(per_fault: list[dict[str, Any]], kind: str) -> dict[str, float]:
    """p50 of each handover step over the faults of `kind` that changed the primary."""
    steps = [f["steps"] for f in per_fault if f["kind"] == kind and f["steps"]]
    return {s: round(percentile([x.get(s, 0.0) for x in steps], 50), 3) for s in STEPS if steps}


def _key_gone_median(per_fault: list[dict[str, Any]], kind: str) -> float | None:
    gone = [f["key_gone"] for f in per_fault if f["kind"] == kind and f["key_gone"] is not None]
    return round(percentile(gone, 50), 3) if gone else None


def _summary(r: dict[str, Any]) -> dict[str, Any]:
    faults = sum(len(v) for v in r["times"].values())
    lost_per_fault = [f["lost"] for f in r["per_fault"]]
    return {
        "synchronous": r["synchronous"],
        "max_lag": r["max_lag"],
        "wal_per_write": r["wal_per_write"],
        "lost_per_fault_max": max(lost_per_fault, default=0),
        "handover_steps_p50": {k: _step_medians(r["per_fault"], k) for k in r["times"]},
        "key_gone_s_p50": {k: _key_gone_median(r["per_fault"], k) for k in r["times"]},
        "faults": faults,
        "stuck": r["stuck"],
        "acked": r["acked"],
        "lost": None if r["lost"] is None else len(r["lost"]),
        "lost_first": (r["lost"] or [])[:10],
        "double_writable": len(r["double"]),
        "role_rounds": r["rounds"],
        "writable_again_s": {
            k: {"p50": round(percentile(v, 50), 3), "p95": round(percentile(v, 95), 3)}
            for k, v in r["times"].items()
        },
    }


def report(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    systems = list(results)
    kinds = list(next(iter(results.values()))["times"])
    rows = []
    for kind in kinds:
        row = [kind]
        for s in systems:
            values = results[s]["times"][kind]
            row += [
                str(len(values)),
                f"{percentile(values, 50):.2f}",
                f"{percentile(values, 95):.2f}",
                f"{max(values) if values else float('nan'):.2f}",
            ]
        rows.append(row)
    head = ["fault"]
    for s in systems:
        head += [f"{s} n", f"{s} p50 s", "p95 s", "max s"]
    print(table(head, rows))
    summaries = {s: _summary(r) for s, r in results.items()}
    for s, m in summaries.items():
        lost = "unknown (no primary at the end)" if m["lost"] is None else m["lost"]
        print(
            f"{s}: {m['faults']} faults, {m['acked']} acknowledged writes, {lost} lost; "
            f"{m['double_writable']} of {m['role_rounds']} role rounds with two writable servers"
            + (f"; stuck {m['stuck']}" if m["stuck"] else "")
        )
        if not m["synchronous"]:
            per = m["wal_per_write"]
            bound = f"{m['max_lag'] / per:.0f} writes" if per else "unknown"
            print(
                f"  asynchronous, max_lag {m['max_lag']} bytes (about {bound} at {per} WAL "
                f"bytes per write): at most {m['lost_per_fault_max']} lost in one fault"
            )
        for kind, medians in m["handover_steps_p50"].items():
            gone = m["key_gone_s_p50"].get(kind)
            if medians or gone is not None:
                print(
                    f"  {kind}: old leader key gone after p50 {gone} s"
                    + (f"; handover steps p50 {medians}" if medians else "")
                )
    h = summaries.get("hadeck")
    ok = (
        h is not None
        and (h["lost"] == 0 or not h["synchronous"])
        and not h["double_writable"]
        and not h["stuck"]
        and h["faults"] >= 50
    )
    if h is not None and "patroni" in summaries:
        p = summaries["patroni"]
        faster = all(
            h["writable_again_s"][k]["p50"] <= p["writable_again_s"][k]["p50"] for k in kinds
        )
        print(f"\nhadeck <= Patroni on p50 time for every fault kind: {faster}")
        ok = ok and faster and (p["lost"] is None or h["lost"] <= p["lost"])
    return {
        "benchmark": "postgresql",
        "ok": ok,
        "ttl": results[systems[0]]["ttl"],
        "systems": summaries,
        "machine": machine(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", type=int, default=13, help="faults of each kind")
    parser.add_argument(
        "--systems", default="hadeck", help="comma-separated: hadeck, patroni (in this order)"
    )
    parser.add_argument(
        "--ttl",
        type=int,
        default=20,
        help="lease ttl, seconds, for every system (Patroni's etcd3 client takes no less than 20)",
    )
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help=f"comma-separated, of: {', '.join(KINDS)}"
    )
    parser.add_argument("--replication", choices=["sync", "async"], default="sync")
    parser.add_argument(
        "--max-lag",
        type=int,
        default=None,
        help="bytes a standby may lag and be promoted (async; default 1 MiB)",
    )
    args = parser.parse_args()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if unknown := [s for s in systems if s not in SYSTEMS]:
        parser.error(f"unknown system {unknown[0]!r} (hadeck, patroni)")
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if not kinds or any(k not in KINDS for k in kinds):
        parser.error(f"--kinds: give some of {', '.join(KINDS)}, not {args.kinds!r}")
    synchronous = args.replication == "sync"
    if not synchronous and systems != ["hadeck"]:
        parser.error("--replication async measures hadeck only: --systems hadeck")
    max_lag = args.max_lag if args.max_lag is not None else (0 if synchronous else 1 << 20)
    setup = Setup(args.ttl, kinds, synchronous, max_lag)
    return run_benchmark(
        "postgresql", lambda: {s: measure(s, args.faults, setup) for s in systems}, report
    )


if __name__ == "__main__":
    sys.exit(main())
