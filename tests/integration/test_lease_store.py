"""The lease store contract, checked the same way against both backends.

What the member loop relies on: at most one holder per group, a fencing token that
only grows, a key that lives while it is renewed and dies when it is not, a stale
holder that can neither renew nor delete its successor's key, member records that
expire, flags, a history newest first, and (etcd) an outage that turns every call
into a prompt `LeaseStoreError` instead of a hang.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent import clock as agent_clock
from agent.failover.lease import Handover, Leader, LeaseStore, LeaseStoreError, MemberRecord
from agent.failover.lease_etcd import EtcdLeaseStore
from agent.failover.lease_sqlite import SqliteLeaseStore
from tests.support.agent import free_port
from tests.support.etcd import EtcdServer

pytestmark = pytest.mark.integration

T = TypeVar("T")
GROUP = "db"


async def eventually(
    condition: Callable[[], Awaitable[T | None]], timeout: float, what: str, interval: float = 0.1
) -> T:
    """Poll an async condition until it is truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await condition()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Backend:
    name: str
    make: Callable[[], LeaseStore]
    #: The shortest TTL the backend honours as asked (etcd: whole seconds, minimum 2 s).
    ttl: float
    #: How late after its TTL a key may still be seen (etcd checks expiry every ~500 ms).
    expiry_slack: float


@pytest.fixture(params=["sqlite", "etcd"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """A way to open stores on one backend (several objects = several members)."""
    opened: list[LeaseStore] = []
    if request.param == "sqlite":
        path = tmp_path / "leases.db"

        def make() -> LeaseStore:
            opened.append(SqliteLeaseStore(path, timeout=2.0))
            return opened[-1]

        b = Backend("sqlite", make, ttl=1.0, expiry_slack=0.5)
    else:
        server: EtcdServer = request.getfixturevalue("shared_etcd")
        prefix = f"/hadeck-test/{uuid.uuid4().hex}"

        def make() -> LeaseStore:
            opened.append(EtcdLeaseStore([server.url], prefix=prefix, timeout=2.0))
            return opened[-1]

        b = Backend("etcd", make, ttl=2.0, expiry_slack=1.0)
    yield b
    for store in opened:
        await store.close()


@pytest.fixture
def store(backend: Backend) -> LeaseStore:
    return backend.make()


def record(member: str, **kw: Any) -> MemberRecord:
    fields: dict[str, Any] = dict(
        healthy=True, lag=0.5, priority=100, role="replica", note="", address=None, updated_at=1.0
    )
    fields.update(kw)
    return MemberRecord(member=member, **fields)


# ---- the leader key ---------------------------------------------------------------------


async def test_acquire_when_free(store: LeaseStore, backend: Backend) -> None:
    assert await store.leader(GROUP) is None
    got = await store.acquire(GROUP, "a", 30)
    assert got is not None
    assert (got.group, got.member) == (GROUP, "a")
    assert got.token > 0
    assert got.ttl_left is not None and got.ttl_left >= 30
    seen = await store.leader(GROUP)
    assert seen is not None
    assert (seen.member, seen.token) == ("a", got.token)
    assert seen.ttl_left is not None and 0 < seen.ttl_left <= got.ttl_left
    # Groups are independent.
    assert await store.leader("other") is None


async def test_second_acquire_by_another_member_returns_none(backend: Backend) -> None:
    a, b = backend.make(), backend.make()
    held = await a.acquire(GROUP, "a", 30)
    assert held is not None
    assert await b.acquire(GROUP, "b", 30) is None
    assert await a.acquire(GROUP, "a", 30) is None  # not re-entrant either
    seen = await b.leader(GROUP)
    assert seen is not None and (seen.member, seen.token) == ("a", held.token)


async def test_token_grows_across_acquisitions(store: LeaseStore) -> None:
    first = await store.acquire(GROUP, "a", 30)
    assert first is not None
    assert await store.release(first) is True
    assert await store.leader(GROUP) is None
    second = await store.acquire(GROUP, "b", 30)
    assert second is not None
    assert second.token > first.token
    assert await store.release(second) is True
    third = await store.acquire(GROUP, "a", 30)
    assert third is not None and third.token > second.token


async def test_stale_leader_cannot_renew_or_release_the_new_holder(store: LeaseStore) -> None:
    old = await store.acquire(GROUP, "a", 30)
    assert old is not None
    assert await store.release(old) is True
    assert await store.release(old) is False  # already gone
    # Same member again: only the token tells the acquisitions apart.
    new = await store.acquire(GROUP, "a", 30)
    assert new is not None and new.token > old.token
    assert await store.renew(old, 30) is False
    assert await store.release(old) is False
    seen = await store.leader(GROUP)
    assert seen is not None and seen.token == new.token
    assert await store.renew(new, 30) is True


async def test_renew_keeps_the_key_past_its_ttl(store: LeaseStore, backend: Backend) -> None:
    ttl = backend.ttl
    held = await store.acquire(GROUP, "a", ttl)
    assert held is not None
    start = time.monotonic()
    slowest = 0.0
    # Past the point where the key would have expired without the renewals.
    while time.monotonic() - start < ttl + backend.expiry_slack + 0.25:
        t0 = time.monotonic()
        assert await store.renew(held, ttl) is True
        slowest = max(slowest, time.monotonic() - t0)
        seen = await store.leader(GROUP)
        assert seen is not None and seen.token == held.token, seen
        await asyncio.sleep(ttl / 4)
    # A renewal is a couple of round trips on loopback, far inside any sane loop_wait.
    assert slowest < 0.5, f"renew took {slowest:.3f}s"


async def test_key_expires_without_renew_and_another_member_takes_over(
    backend: Backend,
) -> None:
    a, b = backend.make(), backend.make()
    ttl = backend.ttl
    held = await a.acquire(GROUP, "a", ttl)
    assert held is not None
    acquired_at = time.monotonic()
    assert await b.acquire(GROUP, "b", ttl) is None

    async def gone() -> bool:
        return await b.leader(GROUP) is None

    await eventually(gone, ttl + backend.expiry_slack + 1, "the unrenewed key to expire")
    # Never before its TTL: the holder may count on it (etcd's clock starts a little after
    # ours did, so this is a lower bound with a few ms to spare).
    assert time.monotonic() - acquired_at >= ttl - 0.05
    # The lapsed holder cannot bring it back.
    assert await a.renew(held, ttl) is False
    assert await a.leader(GROUP) is None
    successor = await b.acquire(GROUP, "b", ttl)
    assert successor is not None and successor.token > held.token
    assert await a.renew(held, ttl) is False
    assert await a.release(held) is False
    seen = await a.leader(GROUP)
    assert seen is not None and (seen.member, seen.token) == ("b", successor.token)


async def test_concurrent_acquire_exactly_one_wins(backend: Backend) -> None:
    stores = [backend.make() for _ in range(10)]
    gate = asyncio.Event()

    async def contend(i: int, s: LeaseStore) -> Leader | None:
        await gate.wait()
        return await s.acquire(GROUP, f"m{i}", 30)

    tasks = [asyncio.create_task(contend(i, s)) for i, s in enumerate(stores)]
    await asyncio.sleep(0)  # every task waits at the gate
    gate.set()
    results = await asyncio.gather(*tasks)
    winners = [r for r in results if r is not None]
    assert len(winners) == 1, results
    seen = await stores[0].leader(GROUP)
    assert seen is not None and (seen.member, seen.token) == (winners[0].member, winners[0].token)


RACER = """
import asyncio, json, sys, time
from pathlib import Path
from agent.failover.lease_sqlite import SqliteLeaseStore

async def main() -> None:
    path, go, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    stores = [SqliteLeaseStore(path, timeout=5.0) for _ in range(5)]
    print("ready", flush=True)
    deadline = time.monotonic() + 20
    while not go.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    got = await asyncio.gather(*(s.acquire("db", f"{name}-{i}", 30) for i, s in enumerate(stores)))
    print(json.dumps([[g.member, g.token] for g in got if g is not None]), flush=True)

asyncio.run(main())
"""


async def test_sqlite_two_processes_race_exactly_one_wins(tmp_path: Path) -> None:
    path, go = tmp_path / "leases.db", tmp_path / "go"
    SqliteLeaseStore(path)  # schema first, so the racers only race for the key
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(path), str(go), name],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        for name in ("p1", "p2")
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        go.touch()
        outs = [p.communicate(timeout=30)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0]
    winners = [w for out in outs for w in json.loads(out)]
    assert len(winners) == 1, outs
    store = SqliteLeaseStore(path)
    seen = await store.leader(GROUP)
    assert seen is not None and [seen.member, seen.token] == winners[0]


# ---- member records, flags, history ------------------------------------------------------


async def test_member_records_publish_list_and_expire(backend: Backend) -> None:
    a, b = backend.make(), backend.make()
    ttl = backend.ttl
    # "a" and "ab": one member's name being a prefix of another's must not confuse listing.
    await a.publish(GROUP, record("ab", priority=50, address="10.0.0.2:9100"), ttl)
    await a.publish(GROUP, record("a", healthy=False, lag=None, note="service down"), ttl)
    await b.publish(GROUP, record("b", role="primary"), ttl)
    await b.publish("other", record("x"), ttl)

    listed = await a.members(GROUP)
    assert [r.member for r in listed] == ["a", "ab", "b"]
    assert listed[0] == record("a", healthy=False, lag=None, note="service down")
    assert listed[1] == record("ab", priority=50, address="10.0.0.2:9100")

    # A new write replaces the record and restarts its clock.
    await a.publish(GROUP, record("a", healthy=True, lag=0.0), ttl)
    assert (await b.members(GROUP))[0] == record("a", healthy=True, lag=0.0)

    # "a" keeps publishing, "ab" and "b" stop: they disappear, "a" stays.
    async def only_a_left() -> bool:
        await a.publish(GROUP, record("a"), ttl)
        return [r.member for r in await b.members(GROUP)] == ["a"]

    stopped = time.monotonic()
    await eventually(only_a_left, 2 * ttl + backend.expiry_slack, "silent members to expire")
    assert time.monotonic() - stopped >= ttl - 0.3
    assert await a.members("nobody") == []


async def test_flags_set_get_delete(store: LeaseStore) -> None:
    assert await store.get_flag(GROUP, "paused") is None
    await store.set_flag(GROUP, "paused", "operator alice: maintenance")
    await store.set_flag(GROUP, "switchover", json.dumps({"to": "b"}))
    assert await store.get_flag(GROUP, "paused") == "operator alice: maintenance"
    assert json.loads(await store.get_flag(GROUP, "switchover") or "") == {"to": "b"}
    await store.set_flag(GROUP, "paused", "again")
    assert await store.get_flag(GROUP, "paused") == "again"
    await store.set_flag(GROUP, "paused", None)
    assert await store.get_flag(GROUP, "paused") is None
    await store.set_flag(GROUP, "paused", None)  # deleting nothing is fine
    assert await store.get_flag(GROUP, "switchover") is not None
    assert await store.get_flag("other", "switchover") is None


async def test_history_newest_first_with_limit(store: LeaseStore) -> None:
    entries = [
        Handover(GROUP, 100.0, None, "a", 3, "initial", "first primary", "agent"),
        Handover(GROUP, 200.0, "a", "b", 12, "failover", "a down", "agent", {"promote": 0.4}),
        Handover(GROUP, 300.0, "b", "a", 30, "switchover", "planned", "alice"),
        # Same token as the one before (a retried write): kept, not overwritten.
        Handover(GROUP, 301.0, "b", "a", 30, "switchover", "retried", "alice"),
    ]
    await store.add_history(Handover("other", 1.0, None, "x", 1, "initial", "", "agent"))
    for e in entries:
        await store.add_history(e)
    assert await store.history(GROUP) == entries[::-1]
    assert await store.history(GROUP, limit=2) == entries[::-1][:2]
    assert [h.to_member for h in await store.history("other")] == ["x"]
    assert await store.history("nobody") == []


# ---- etcd specifics ---------------------------------------------------------------------


async def test_etcd_ttl_is_whole_seconds_with_a_minimum(shared_etcd: EtcdServer) -> None:
    store = EtcdLeaseStore([shared_etcd.url], prefix=f"/hadeck-test/{uuid.uuid4().hex}")
    try:
        short = await store.acquire(GROUP, "a", 0.3)
        assert short is not None
        # etcd's floor: 1.5 x election timeout (1000 ms by default), rounded up.
        assert short.ttl_left == 2.0
        assert await store.release(short)
        fractional = await store.acquire(GROUP, "a", 4.2)
        assert fractional is not None and fractional.ttl_left == 5.0
    finally:
        await store.close()


async def test_etcd_renew_needs_the_store_that_acquired(shared_etcd: EtcdServer) -> None:
    prefix = f"/hadeck-test/{uuid.uuid4().hex}"
    first = EtcdLeaseStore([shared_etcd.url], prefix=prefix)
    second = EtcdLeaseStore([shared_etcd.url], prefix=prefix)
    try:
        held = await first.acquire(GROUP, "a", 30)
        assert held is not None
        # A restarted agent (a new store object) does not adopt its predecessor's lease...
        assert await second.renew(held, 30) is False
        # ...but may delete the key it can prove is that acquisition's.
        assert await second.release(held) is True
        assert await first.renew(held, 30) is False
    finally:
        await first.close()
        await second.close()


async def test_etcd_moves_on_from_an_endpoint_that_refuses(shared_etcd: EtcdServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    store = EtcdLeaseStore([dead, shared_etcd.url], prefix=f"/hadeck-test/{uuid.uuid4().hex}")
    try:
        held = await store.acquire(GROUP, "a", 30)
        assert held is not None
        assert await store.renew(held, 30) is True
        seen = await store.leader(GROUP)
        assert seen is not None and (seen.member, seen.token) == ("a", held.token)
    finally:
        await store.close()
    only_dead = EtcdLeaseStore([dead], timeout=1.0)
    try:
        with pytest.raises(LeaseStoreError, match=rf"leader.*{dead}"):
            await only_dead.leader(GROUP)
    finally:
        await only_dead.close()


def every_call(store: LeaseStore, held: Leader) -> dict[str, Awaitable[object]]:
    return {
        "leader": store.leader(GROUP),
        "acquire": store.acquire(GROUP, "b", 2),
        "renew": store.renew(held, 2),
        "release": store.release(held),
        "publish": store.publish(GROUP, record("a"), 2),
        "members": store.members(GROUP),
        "get_flag": store.get_flag(GROUP, "paused"),
        "set_flag": store.set_flag(GROUP, "paused", "x"),
        "add_history": store.add_history(Handover(GROUP, 1.0, None, "a", 1, "initial", "", "t")),
        "history": store.history(GROUP),
    }


async def assert_every_call_fails_within(store: LeaseStore, held: Leader, bound: float) -> None:
    async def timed(name: str, call: Awaitable[object]) -> tuple[str, float, BaseException | None]:
        t0 = time.monotonic()
        try:
            await call
        except Exception as exc:
            return name, time.monotonic() - t0, exc
        return name, time.monotonic() - t0, None

    results = await asyncio.gather(*(timed(n, c) for n, c in every_call(store, held).items()))
    for name, took, exc in results:
        assert isinstance(exc, LeaseStoreError), f"{name}: {exc!r}"
        assert name in str(exc) and "127.0.0.1" in str(exc), f"{name}: {exc}"
        assert took < bound, f"{name} took {took:.2f}s"


@pytest.mark.parametrize("outage", ["stopped", "frozen"])
async def test_etcd_outage_fails_every_call_promptly_and_recovers(
    etcd: EtcdServer, outage: str
) -> None:
    timeout = 1.0
    store = EtcdLeaseStore([etcd.url], timeout=timeout)
    try:
        held = await store.acquire(GROUP, "a", 2)
        assert held is not None
        await store.publish(GROUP, record("a"), 2)

        t0 = time.monotonic()
        if outage == "stopped":
            etcd.stop()  # connections refused: fails at once
        else:
            etcd.freeze()  # connections accepted, never answered: fails at the timeout
        await assert_every_call_fails_within(store, held, timeout + 0.5)
        out_for = time.monotonic() - t0
        if outage == "stopped":
            etcd.start()
        else:
            etcd.thaw()

        async def answers() -> bool:
            try:
                await store.get_flag(GROUP, "paused")
            except LeaseStoreError:
                return False
            return True

        await eventually(answers, 15, "the store to answer again")
        # Back to normal: whoever holds the key now (etcd may have extended the old lease
        # across its restart), it expires unrenewed and another member takes over.
        assert out_for < 5

        async def taken_over() -> Leader | None:
            return await store.acquire(GROUP, "b", 2)

        successor = await eventually(taken_over, 10, "member b to acquire after the outage")
        assert successor.token > held.token
        assert await store.renew(successor, 2) is True
        await store.set_flag(GROUP, "paused", "yes")
        assert await store.get_flag(GROUP, "paused") == "yes"
    finally:
        await store.close()


# ---- SQLite: the clock leases run on -----------------------------------------------------


class FakeClock:
    """A clock source handed to the store, moved by the test: no real time passes."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_sqlite_leases_run_on_the_holders_clock_not_the_wall_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Holders keep their deadlines on agent/clock.py's clock; the store must expire on the
    same one. A wall clock stepped forward by an hour (NTP, `date -s`) expires nothing;
    the holders' clock passing the ttl does."""
    boot = FakeClock()
    monkeypatch.setattr(agent_clock, "now", boot)
    path = tmp_path / "leases.db"
    holder, other = SqliteLeaseStore(path), SqliteLeaseStore(path)
    lease = await holder.acquire(GROUP, "a", 10.0)
    assert lease is not None
    await holder.publish(GROUP, record("a"), 10.0)
    stepped = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: stepped)
    assert await other.acquire(GROUP, "b", 10.0) is None
    seen = await other.leader(GROUP)
    assert seen is not None and (seen.member, seen.token, seen.ttl_left) == ("a", lease.token, 10)
    assert [r.member for r in await other.members(GROUP)] == ["a"]
    boot.t += 10.0
    assert await other.leader(GROUP) is None and await other.members(GROUP) == []
    assert await other.acquire(GROUP, "b", 10.0) is not None


async def test_sqlite_leases_expire_by_the_stores_clock_and_with_the_boot(tmp_path: Path) -> None:
    path = tmp_path / "leases.db"
    clock = FakeClock()
    a, b = SqliteLeaseStore(path, clock=clock), SqliteLeaseStore(path, clock=clock)
    lease = await a.acquire(GROUP, "a", 10.0)
    assert lease is not None
    clock.t += 9.9
    assert await b.acquire(GROUP, "b", 10.0) is None
    left = await b.leader(GROUP)
    assert left is not None and abs((left.ttl_left or 0) - 0.1) < 1e-6
    clock.t += 0.2
    assert await b.leader(GROUP) is None
    assert not await a.renew(lease, 10.0)  # too late: it expired, whoever looks
    won = await b.acquire(GROUP, "b", 10.0)
    assert won is not None and won.token > lease.token
    # The machine rebooted: its clock starts again, and every holder died with it.
    rebooted = SqliteLeaseStore(path, clock=FakeClock(), boot="another-boot")
    assert await rebooted.leader(GROUP) is None
    after = await rebooted.acquire(GROUP, "c", 10.0)
    assert after is not None and after.token > won.token


async def test_a_sqlite_file_from_before_the_boot_column_opens(tmp_path: Path) -> None:
    path = tmp_path / "leases.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE leader (grp TEXT PRIMARY KEY, member TEXT NOT NULL,"
        " token INTEGER NOT NULL, expires REAL NOT NULL);"
        "CREATE TABLE members (grp TEXT NOT NULL, member TEXT NOT NULL, record TEXT NOT NULL,"
        " expires REAL NOT NULL, PRIMARY KEY (grp, member));"
        "CREATE TABLE tokens (grp TEXT PRIMARY KEY, last INTEGER NOT NULL);"
        f"INSERT INTO leader VALUES ('{GROUP}', 'old', 4, 9e12);"
        f"INSERT INTO tokens VALUES ('{GROUP}', 4);"
    )
    db.commit()
    db.close()
    store = SqliteLeaseStore(path)
    assert await store.leader(GROUP) is None  # a wall-clock row of an old agent: void
    lease = await store.acquire(GROUP, "a", 5.0)
    assert lease is not None and lease.token == 5
