"""Every action, by an operator or by the agent itself, is journaled the same way: an audit
record, a row in the actions table, a count in hadeck_actions_total and an event."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import AgentProcess, DemoService, http_probe, restartable
from tests.support.groups import GROUP, member_config
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def actions_total(agent: AgentProcess, action: str, result: str) -> float:
    for line in agent.text("/metrics").splitlines():
        if line.startswith("hadeck_actions_total{") and (
            f'action="{action}"' in line and f'result="{result}"' in line
        ):
            return float(line.split()[-1])
    return 0.0


def action_rows(agent: AgentProcess) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(agent.state_dir / "state.db", timeout=5)
    try:
        return db.execute("SELECT actor, action, target, ok FROM actions ORDER BY id").fetchall()
    finally:
        db.close()


def test_group_operations_are_journaled_as_every_action_is(
    start_agent, demo_service: DemoService, tmp_path: Path
):
    store = {"kind": "sqlite", "path": str(tmp_path / "leases.db"), "timeout": "1s"}
    agent = start_agent(member_config("m1", tmp_path, demo_service, store))
    path = f"/api/v1/groups/{GROUP}"
    assert agent.post(f"{path}/pause", actor="alice", json={"reason": "maint"}).status_code == 200
    refused = agent.post(f"{path}/switchover", actor="bob", json={})
    assert refused.status_code == 409 and "paused" in refused.json()["error"]
    no_confirm = agent.post(f"{path}/failover", actor="bob", json={})
    assert no_confirm.status_code == 400
    assert agent.post(f"{path}/resume", actor="alice", json={}).status_code == 200

    assert actions_total(agent, "group_pause", "ok") == 1
    assert actions_total(agent, "group_switchover", "refused") == 1
    assert actions_total(agent, "group_failover", "refused") == 1
    assert actions_total(agent, "group_resume", "ok") == 1
    # (The agent's own promotions and demotions are journaled too, as `hadeck-agent`.)
    assert [r for r in action_rows(agent) if r[0] != "hadeck-agent"] == [
        ("alice", "group_pause", GROUP, 1),
        ("bob", "group_switchover", GROUP, 0),
        ("bob", "group_failover", GROUP, 0),
        ("alice", "group_resume", GROUP, 1),
    ]
    audit = [
        (a["actor"], a["action"])
        for a in agent.get("/api/v1/audit")
        if a["actor"] != "hadeck-agent"  # its own promotion once resumed
    ]
    assert audit == [
        ("alice", "group_pause"),
        ("bob", "group_switchover"),
        ("bob", "group_failover"),
        ("alice", "group_resume"),
    ]
    # The events name the audit record they belong to.
    paused = agent.wait_event("group_paused")
    seq = next(a["seq"] for a in agent.get("/api/v1/audit") if a["action"] == "group_pause")
    assert paused["evidence"]["audit_seq"] == seq


def test_automatic_recovery_is_journaled_as_every_action_is(start_agent, demo_service):
    agent = start_agent(
        {
            "probes": {"web": http_probe(demo_service)},
            "services": {"web": restartable(demo_service, ["web"])},
        }
    )
    wait_for(lambda: agent.service("web")["state"] == "up", 10, "web up")
    demo_service.kill()
    recovered = agent.wait_event("recovery_recovered", service="web")

    assert actions_total(agent, "recovery", "ok") == 1
    assert action_rows(agent) == [("hadeck-agent", "recovery", "web", 1)]
    record = next(a for a in agent.get("/api/v1/audit") if a["action"] == "recovery")
    assert recovered["evidence"]["audit_seq"] == record["seq"]
