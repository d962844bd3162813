"""A recovery episode lasts as long as its service is down, whatever goes wrong inside it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agent.audit import AuditLog, read
from agent.commands import CommandResult
from agent.config import RecoveryPolicy
from agent.events import EventLog
from agent.journal import Journal
from agent.metrics import Metrics
from agent.recovery.attempts import RecoveryAttempts
from agent.recovery.ladder import RecoveryLadder, ServiceView
from agent.store import Store
from agent.supervision_metrics import SupervisionMetrics


async def test_an_unexpected_error_in_an_attempt_does_not_end_the_episode(tmp_path: Path):
    store, metrics = Store(tmp_path / "state.db"), Metrics()
    events = EventLog(store, metrics)
    audit = AuditLog(tmp_path / "audit.jsonl")
    journal = Journal(audit, store, metrics, events)
    up = False
    calls = 0

    async def run_step(step: str) -> list[CommandResult]:
        nonlocal up, calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in a step")
        up = True
        return [CommandResult(("restart",), 0, 0.01)]

    policy = RecoveryPolicy.model_validate(
        {"verify_window": "1s", "backoff": {"initial": "50ms", "max": "100ms"}}
    )
    view = ServiceView(is_up=lambda: up, blockers=list, run_step=run_step)
    ladder = RecoveryLadder(
        "web",
        policy,
        view,
        events,
        RecoveryAttempts(store),
        SupervisionMetrics(metrics.registry),
        journal,
    )
    ladder.service_down()
    await asyncio.sleep(0)  # the episode's first turn
    states = []
    deadline = time.monotonic() + 10
    while not up and time.monotonic() < deadline:
        states.append(ladder.state)
        await asyncio.sleep(0.01)
    assert up, f"the service was never brought back; ladder states {sorted(set(states))}"
    assert "idle" not in states
    assert calls == 2
    while ladder.state != "idle" and time.monotonic() < deadline:  # the episode's end
        await asyncio.sleep(0.01)
    assert ladder.state == "idle"
    assert [r["action"] for _, r, _ in read(audit.path) if r] == ["recovery"]
    audit.close()
    store.close()
