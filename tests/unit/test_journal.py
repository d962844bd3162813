"""The journal writes an action's audit record, actions row, metric and event together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.audit import AuditLog, read, verify
from agent.events import EventLog
from agent.journal import Event, Journal
from agent.metrics import Metrics
from agent.store import Store


class Parts:
    def __init__(self, d: Path) -> None:
        self.audit = AuditLog(d / "audit.jsonl")
        self.store = Store(d / "state.db")
        self.metrics = Metrics()
        self.events = EventLog(self.store, self.metrics)

    def journal(self, wait: float = 10.0) -> Journal:
        return Journal(self.audit, self.store, self.metrics, self.events, wait=wait)

    def count(self, action: str, result: str) -> float:
        labels = {"action": action, "result": result}
        return self.metrics.registry.get_sample_value("hadeck_actions_total", labels) or 0.0

    def rows(self) -> list[tuple[object, ...]]:
        return self.store.db.execute(
            "SELECT actor, action, target, ok, detail FROM actions ORDER BY id"
        ).fetchall()

    def records(self) -> list[dict[str, object]]:
        return [r for _, r, _ in read(self.audit.path) if r is not None]


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    p = Parts(tmp_path)
    yield p
    p.audit.close()
    p.store.close()


async def test_a_finished_action_is_on_disk_counted_stored_and_raised(parts: Parts) -> None:
    journal = parts.journal()
    entry = await journal.finished(
        "alice",
        "backup",
        "db",
        {"reason": "before the upgrade"},
        ok=True,
        message="snapshot 4f2a saved",
        started=time.time() - 2,
        duration=2.0,
        result={"snapshot": "4f2a"},
        event=Event("backup_finished", "info", "backup of db: snapshot 4f2a", service="db"),
        operation="op-17",
    )
    assert entry.error is None and entry.note() == ""
    # On disk when the call returns, not merely queued.
    assert verify(parts.audit.path) == (1, None)
    (record,) = parts.records()
    assert record["seq"] == entry.seq
    assert record["params"] == {"reason": "before the upgrade", "operation": "op-17"}
    assert record["result"] == {"ok": True, "snapshot": "4f2a"}
    assert parts.rows() == [("alice", "backup", "db", 1, "snapshot 4f2a saved")]
    assert parts.count("backup", "ok") == 1
    (event,) = parts.store.events()
    assert (event.kind, event.service, event.message) == (
        "backup_finished",
        "db",
        "backup of db: snapshot 4f2a",
    )
    assert event.evidence == {"audit_seq": entry.seq, "operation": "op-17"}


async def test_a_refused_action_is_on_disk_counted_and_stored_but_raises_no_event(
    parts: Parts,
) -> None:
    entry = await parts.journal().refused(
        "bob", "restart", "web", {"reason": ""}, "a restart of 'web' is already running"
    )
    assert entry.error is None
    (record,) = parts.records()
    assert record["result"] == {"ok": False, "refused": "a restart of 'web' is already running"}
    assert "operation" not in record["params"]
    assert parts.rows() == [
        ("bob", "restart", "web", 0, "refused: a restart of 'web' is already running")
    ]
    assert parts.count("restart", "refused") == 1
    assert parts.store.events() == []


async def test_a_hung_audit_write_delays_the_answer_by_at_most_the_wait_never_the_loop(
    parts: Parts,
) -> None:
    journal = parts.journal(wait=0.5)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    # The disk lock held from outside stands for a write stuck in the kernel: the journal's
    # writer thread waits on it exactly as it would on the write.
    parts.audit._disk.acquire()
    try:
        started = time.monotonic()
        entry = await journal.refused("bob", "restart", "web", {}, "no such service")
        waited = time.monotonic() - started
    finally:
        parts.audit._disk.release()
    assert 0.5 <= waited < 2.0
    assert ticks >= 10, "the event loop stood still while the audit write hung"
    assert entry.seq == 1 and entry.error is not None and "did not return" in entry.error
    assert "audit record 1 is not on disk yet" in entry.note()
    # The write goes on once the disk answers: the record lands, and the chain is whole.
    deadline = time.monotonic() + 5
    while parts.audit.pending and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert verify(parts.audit.path) == (1, None)
    ticker.cancel()
