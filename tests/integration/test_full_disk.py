"""A full disk under the agent's state: detection and recovery go on, nothing audited is lost.

Each test mounts a small tmpfs of its own and fills it with a ballast file, so the
kernel answers as a full disk does: ENOSPC, writes cut short part-way through a
record, SQLite's "database or disk is full". Then it frees the ballast and checks
that what was kept in memory reached the disk, in order, with the hash chain intact.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.audit import AuditLog, read, verify
from agent.events import EventLog
from agent.metrics import Metrics
from agent.operations import Operation, Operations
from agent.probes.results import ProbeResults
from agent.store import Store
from tests.support.agent import AgentProcess, DemoService, http_probe, restartable
from tests.support.fullfs import SmallFilesystem, small_filesystem
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[SmallFilesystem]:
    with small_filesystem(tmp_path / "small") as fs:
        yield fs


def records(path: Path) -> list[dict[str, Any]]:
    return [r for _, r, _ in read(path) if r is not None]


# -- the audit log ---------------------------------------------------------------------


def test_a_record_cut_short_by_a_full_disk_is_taken_back_and_written_whole_later(full_disk):
    path = full_disk.path / "audit.jsonl"
    log = AuditLog(path)
    log.append("alice", "restart", "web", {"reason": "deploy"}, {"ok": True})
    before = path.read_bytes()
    full_disk.fill()
    # More than the rest of the file's last page holds: the kernel writes part of it.
    log.append("alice", "runbook", "rotate", {"reason": "x" * 6000}, {"ok": True})
    assert path.read_bytes() == before, "a half record was left on disk"
    assert log.pending == 1

    # Read back meanwhile: on disk the first, waiting the second, none missing.
    assert [(r["seq"], r.get("on_disk", True)) for r in log.tail()] == [(1, True), (2, False)]
    assert [r["seq"] for r in log.tail(since=1)] == [2]
    assert [r["seq"] for r in log.tail(limit=1)] == [2]

    full_disk.free()
    log.append("bob", "restart", "web", {"reason": "again"}, {"ok": True})
    assert log.pending == 0
    assert [(r["seq"], r.get("on_disk", True)) for r in log.tail()] == [
        (1, True),
        (2, True),
        (3, True),
    ]
    assert verify(path) == (3, None)
    assert [(r["seq"], r["actor"], r["action"]) for r in records(path)] == [
        (1, "alice", "restart"),
        (2, "alice", "runbook"),
        (3, "bob", "restart"),
    ]
    log.close()


def test_records_made_while_the_disk_is_full_reach_it_in_order_when_it_frees(full_disk):
    path = full_disk.path / "audit.jsonl"
    log = AuditLog(path)
    full_disk.fill()
    made = [
        log.append("hadeck-agent", "recovery", "web", {"attempt": n}, {"ok": False})
        for n in (1, 2, 3)
    ]
    assert [m["seq"] for m in made if m is not None] == [1, 2, 3]
    assert log.pending == 3 and path.read_bytes() == b""
    assert log.flush() is not None  # still full: says why

    full_disk.free()
    assert log.flush() is None
    assert log.pending == 0
    assert verify(path) == (3, None)
    assert [r["params"]["attempt"] for r in records(path)] == [1, 2, 3]
    assert records(path) == made  # the very records made at the time (their ts, their hashes)
    log.close()

    again = AuditLog(path)  # a restarted agent goes on from the last record on disk
    assert (record := again.append("bob", "restart", "web", {}, {"ok": True})) is not None
    assert record["seq"] == 4 and verify(path) == (4, None)
    again.close()


def test_records_beyond_the_memory_bound_are_dropped_and_the_loss_is_chained(full_disk):
    path = full_disk.path / "audit.jsonl"
    log = AuditLog(path, max_pending_bytes=8192)
    full_disk.fill()
    made = [
        log.append("alice", "restart", "web", {"n": n, "pad": "x" * 500}, {"ok": True})
        for n in range(40)
    ]
    kept = [m for m in made if m is not None]
    assert 0 < len(kept) < 40
    assert made[: len(kept)] == kept  # the oldest are kept, the newest dropped

    full_disk.free()
    assert log.flush() is None
    on_disk = records(path)
    assert on_disk[:-1] == kept
    lost = on_disk[-1]
    assert (lost["actor"], lost["action"]) == ("hadeck-agent", "audit_records_dropped")
    assert lost["params"]["count"] == 40 - len(kept)
    assert verify(path) == (len(kept) + 1, None)
    log.close()


def test_records_still_pending_at_close_go_to_the_log(full_disk, caplog):
    path = full_disk.path / "audit.jsonl"
    log = AuditLog(path)
    full_disk.fill()
    log.append("alice", "restart", "web", {"reason": "before the stop"}, {"ok": True})
    with caplog.at_level(logging.ERROR, logger="hadeck.audit"):
        log.close()
    assert "before the stop" in caplog.text and "not written" in caplog.text


# -- the event log ---------------------------------------------------------------------


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_an_event_the_store_cannot_write_neither_stops_its_caller_nor_is_lost(full_disk, caplog):
    store = Store(full_disk.path / "state.db")
    metrics = Metrics()
    events = EventLog(store, metrics)
    events.emit("agent_started", "info", "started")
    full_disk.fill()
    with caplog.at_level(logging.WARNING, logger="hadeck.events"):
        for n in range(50):  # a storm: every write fails
            events.emit("probe_down", "warning", f"probe p{n} is down", probe=f"p{n}")
        events.emit("service_down", "critical", "service web is down", service="web")
    assert [e.kind for e in store.events()] == ["agent_started"]
    assert sample(metrics, "hadeck_event_write_failures_total") == 51
    # Raised is raised: the count an alert reads goes up even while the store refuses.
    assert sample(metrics, "hadeck_events_total", kind="service_down", severity="critical") == 1
    complaints = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert 1 <= len(complaints) <= 2, [r.getMessage() for r in complaints]

    full_disk.free()
    events.emit("service_up", "info", "service web is up", service="web")
    written = store.events(limit=1000)
    assert [e.kind for e in written] == ["agent_started"] + ["probe_down"] * 50 + [
        "service_down",
        "service_up",
    ]
    assert [e.ts for e in written] == sorted(e.ts for e in written)
    store.close()


async def test_an_event_kept_in_memory_is_written_once_the_disk_frees_without_another(
    full_disk,
):
    store = Store(full_disk.path / "state.db")
    events = EventLog(store, Metrics())
    full_disk.fill()
    events.emit("service_down", "critical", "service web is down", service="web")
    assert store.events() == []
    full_disk.free()
    deadline = time.monotonic() + 15
    while not store.events() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert [e.kind for e in store.events()] == ["service_down"]
    store.close()


async def test_probe_results_the_disk_refuses_are_kept_and_written_once_it_frees(full_disk, caplog):
    """The results buffer is flushed from a loop callback: a full disk must neither raise
    there (a traceback per flush, the rows dropped) nor make reading the history fail."""
    store = Store(full_disk.path / "state.db")
    results = ProbeResults(store)
    results.add("web", 1.0, True, 0.01, "200 OK")
    results.flush()
    full_disk.fill()
    loop_errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
    with caplog.at_level(logging.WARNING, logger="hadeck.store"):
        for n in range(200):
            results.add("web", 2.0 + n, n % 2 == 0, 0.01, "x" * 2000)
            await asyncio.sleep(0)
        deadline = time.monotonic() + 10
        while results.flush_pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the scheduled flush has run (and failed)
        history = results.recent("web", limit=300)  # the history still reads
    assert loop_errors == [], loop_errors
    assert len(history) == 201 and history[-1][0] == 201.0  # newest kept in memory too
    complaints = [r for r in caplog.records if "probe results" in r.getMessage()]
    assert 1 <= len(complaints) <= 2, [r.getMessage() for r in complaints]

    full_disk.free()
    results.flush()
    assert [r[0] for r in results.recent("web", limit=300)] == [1.0] + [2.0 + n for n in range(200)]
    store.close()


async def test_an_operation_that_ends_while_the_disk_is_full_is_not_left_running(full_disk):
    store = Store(full_disk.path / "state.db")
    ops = Operations(store, EventLog(store, Metrics()))
    go = asyncio.Event()

    async def work(op: Operation) -> dict[str, Any]:
        await go.wait()
        return {"copied": 3}

    op = ops.start("backup", "db", "ops", {}, work)
    full_disk.fill()
    go.set()
    deadline = time.monotonic() + 10
    while op.id in ops._running and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    seen = ops.get(op.id)
    assert seen is not None and seen.state == "succeeded" and seen.result == {"copied": 3}
    assert [o.state for o in ops.recent()] == ["succeeded"]  # not the row's `running`
    full_disk.free()
    later = ops.start("backup", "db", "ops", {}, work)  # the next write takes both
    deadline = time.monotonic() + 10
    while later.id in ops._running and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    store.close()
    reopened = Store(full_disk.path / "state.db")
    states = {o.id: o.state for o in Operations(reopened, EventLog(reopened, Metrics())).recent()}
    assert states == {op.id: "succeeded", later.id: "succeeded"}
    reopened.close()


# -- a real agent ----------------------------------------------------------------------


def metric(agent: AgentProcess, name: str, **labels: str) -> float:
    """The value of one series in the agent's /metrics (0 when it is absent)."""
    for line in agent.text("/metrics").splitlines():
        series, _, value = line.rpartition(" ")
        metric_name, _, label_text = series.partition("{")
        if metric_name == name and all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            return float(value)
    return 0.0


def test_a_full_disk_stops_neither_detection_nor_recovery_and_loses_no_audit_record(
    start_agent, demo_service: DemoService, full_disk: SmallFilesystem
):
    state = full_disk.path / "state"
    agent = start_agent(
        {
            "agent": {"state_dir": str(state)},
            "probes": {"web": http_probe(demo_service)},
            "services": {
                "web": restartable(
                    demo_service,
                    ["web"],
                    verify_window="1s",
                    backoff={"initial": "200ms", "max": "500ms"},
                    max_attempts=20,
                )
            },
        }
    )
    wait_for(lambda: agent.service("web")["state"] == "up", 10, "web up")
    full_disk.fill()
    # The first restarts bring the service back still failing its probe: those attempts
    # fail, and their audit records cannot be written.
    demo_service.fail_file.touch()
    old_pid = demo_service.kill()

    seen: list[tuple[str, str]] = []

    def watch(done: Any) -> bool:
        svc = agent.service("web")
        seen.append((svc["state"], svc["recovery"]["state"]))
        return bool(done(svc))

    wait_for(lambda: watch(lambda s: s["state"] == "down"), 10, "web seen down")
    wait_for(
        lambda: watch(lambda s: s["recovery"]["attempts_in_window"] >= 2),
        20,
        "a second attempt after a first that failed and could not be audited",
    )
    demo_service.fail_file.unlink()
    # Up, and the episode over (an attempt that had started when the probe passed ends first).
    wait_for(
        lambda: watch(lambda s: s["state"] == "up" and s["recovery"]["state"] == "idle"),
        20,
        "web back up",
    )
    assert demo_service.alive() and demo_service.pid() != old_pid
    assert ("down", "idle") not in seen, seen
    assert metric(agent, "hadeck_event_write_failures_total") > 0
    assert metric(agent, "hadeck_audit_write_failures_total") > 0
    assert metric(agent, "hadeck_audit_pending_records") >= 2  # the attempts so far

    # An operator acts while the disk is full: the action runs, and the answer says plainly
    # that its audit record is not on disk yet.
    r = agent.post("/api/v1/probes/web/run", actor="alice", json={"reason": "is it back?"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["ok"] is True
    assert "No space left on device" in answer["audit_error"]
    assert "audit record" in answer["message"] and "not on disk" in answer["message"]
    # The log as the API reads it shows the record meanwhile, marked as not on disk.
    waiting = [a for a in agent.get("/api/v1/audit") if a["seq"] == answer["audit_seq"]]
    assert [(a["actor"], a["action"], a["on_disk"]) for a in waiting] == [
        ("alice", "run_probe", False)
    ]

    full_disk.free()
    wait_for(
        lambda: metric(agent, "hadeck_audit_pending_records") == 0,
        30,
        "the pending audit records to be written",
    )
    audit_path = state / "audit.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "audit", "verify", str(audit_path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = records(audit_path)
    attempts = [r for r in written if r["action"] == "recovery"]
    assert len(attempts) >= 2 and attempts[-1]["result"]["ok"] is True
    assert all(not r["result"]["ok"] for r in attempts[:-1])
    probe_run = next(r for r in written if r["action"] == "run_probe")
    assert probe_run["seq"] == answer["audit_seq"] and probe_run["actor"] == "alice"
    # The events raised while the store refused writes are in the event log now, in order.
    kinds = [
        e["kind"]
        for e in wait_for(lambda: agent.events("service_up") and agent.events(), 15, "events")
    ]
    assert "service_down" in kinds and "recovery_failed" in kinds
    assert kinds.index("service_down") < kinds.index("recovery_failed")
    assert "audit_write_failed" in kinds and "audit_write_resumed" in kinds
    assert agent.stop() == 0
    log = agent.log()
    assert log.count("cannot write") < 20, "one log line per failed write"
