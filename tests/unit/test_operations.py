"""Long-running operations: progress, cancel, and a record that survives the agent."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.events import EventLog
from agent.metrics import Metrics
from agent.operations import Failed, Operation, Operations
from agent.store import Store


def _ops(path: Path) -> tuple[Operations, Store]:
    store = Store(path)
    return Operations(store, EventLog(store, Metrics())), store


async def _until(condition: Any, what: str, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_an_operation_reports_progress_and_its_result(tmp_path: Path) -> None:
    ops, store = _ops(tmp_path / "state.db")
    step = asyncio.Event()

    async def work(op: Operation) -> dict[str, Any]:
        op.report("copying", done=1, total=4, unit="files")
        await step.wait()
        return {"copied": 4}

    op = ops.start("backup", "db", "ops", {"why": "test"}, work)
    await _until(lambda: op.progress.done == 1, "first progress")
    seen = ops.get(op.id)
    assert seen is not None and seen.state == "running"
    assert seen.progress.fraction == 0.25 and seen.progress.unit == "files"
    assert seen.progress.eta_seconds is not None and seen.progress.eta_seconds >= 0
    step.set()
    await _until(lambda: op.finished, "the end")
    stored = ops.get(op.id)
    assert stored is not None and stored.state == "succeeded" and stored.result == {"copied": 4}
    events = store.events(limit=10)
    assert events[-1].kind == "operation_succeeded" and events[-1].evidence["operation"] == op.id
    store.close()


async def test_a_failure_and_a_crash_of_the_work_are_failures_that_say_why(tmp_path: Path) -> None:
    ops, store = _ops(tmp_path / "state.db")

    async def refuses(op: Operation) -> dict[str, Any]:
        raise Failed("the repository is locked by db-2", {"lock": "db-2"})

    async def crashes(op: Operation) -> dict[str, Any]:
        raise KeyError("oops")

    a = ops.start("backup", "db", "ops", {}, refuses)
    b = ops.start("backup", "db", "ops", {}, crashes)
    await _until(lambda: a.finished and b.finished, "both ends")
    assert (a.state, a.error, a.result) == (
        "failed",
        "the repository is locked by db-2",
        {"lock": "db-2"},
    )
    assert b.state == "failed" and b.error is not None and "KeyError" in b.error
    store.close()


async def test_cancel_stops_the_work_and_says_cancelled(tmp_path: Path) -> None:
    ops, store = _ops(tmp_path / "state.db")
    stopped = asyncio.Event()

    async def forever(op: Operation) -> dict[str, Any]:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()
        return {}

    op = ops.start("restore", "db", "ops", {}, forever)
    await asyncio.sleep(0)
    done = await ops.cancel(op.id)
    assert done is not None and done.state == "cancelled" and stopped.is_set()
    again = ops.get(op.id)
    assert again is not None and again.state == "cancelled"
    store.close()


def test_operations_running_when_the_agent_stopped_are_listed_as_interrupted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"

    async def first_life() -> str:
        ops, store = _ops(path)
        op = ops.start("backup", "db", "ops", {}, lambda op: asyncio.Event().wait())  # type: ignore[arg-type, return-value]
        await asyncio.sleep(0)
        store.db.close()  # the agent dies: no stop(), the row still says running
        return op.id

    op_id = asyncio.run(first_life())
    ops, store = _ops(path)
    listed = ops.recent()
    assert [o.id for o in listed] == [op_id]
    assert listed[0].state == "interrupted" and listed[0].finished_at is not None
    assert "stopped" in (listed[0].error or "")
    store.close()


@pytest.mark.parametrize("done", [0, 3])
def test_eta_follows_from_the_fraction_and_the_time_so_far(done: int) -> None:
    op = Operation("op-000000000000", "backup", "db", "ops", {}, created_at=0.0)
    op.report(done=done, total=4)
    assert op.progress.fraction == done / 4
    if done == 0:
        assert op.progress.eta_seconds is None  # nothing done: no rate to tell from
    else:
        assert op.progress.eta_seconds is not None and op.progress.eta_seconds > 0


async def test_a_second_cancel_waits_for_the_first_and_cuts_no_cleanup_short(
    tmp_path: Path,
) -> None:
    ops, store = _ops(tmp_path / "state.db")
    started, cleaned = asyncio.Event(), []

    async def work(op: Operation) -> dict[str, Any]:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)  # e.g. withdrawing a request, writing the record
            cleaned.append(op.id)
            raise
        return {}

    op = ops.start("group_switchover", "pg", "ops", {}, work)
    await started.wait()
    first, second = await asyncio.gather(ops.cancel(op.id), ops.cancel(op.id))
    assert cleaned == [op.id]
    assert first is not None and second is not None
    assert first.state == second.state == "cancelled"
    store.close()


async def test_a_deferred_operation_runs_only_when_told_and_a_discarded_one_leaves_no_trace(
    tmp_path: Path,
) -> None:
    ops, store = _ops(tmp_path / "state.db")
    ran: list[str] = []

    async def work(op: Operation) -> dict[str, Any]:
        ran.append(op.id)
        return {}

    kept = ops.start("group_failover", "pg", "ops", {}, work, defer=True)
    dropped = ops.start("group_failover", "pg", "ops", {}, work, defer=True)
    ops.discard(dropped)
    await asyncio.sleep(0.05)
    assert ran == []  # asked for nothing yet
    ops.run(kept)
    await _until(lambda: ran == [kept.id], "the deferred work")
    assert ops.get(dropped.id) is None
    assert [o.id for o in ops.recent()] == [kept.id]
    store.close()
