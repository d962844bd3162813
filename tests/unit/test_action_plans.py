"""Plans say exactly what will run before anything runs; execution reports, never raises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.haproxy import AdminState, HaproxyError, HaproxyRuntime
from agent.schema import GroupActionResult, GroupStatus, PlanCandidate
from agent.schema import Plan as AgentPlan
from console import actions
from console.agent_client import AgentClient
from console.inventory import Haproxy
from console.transport import Response
from tests.support.fake_fleet import (
    FakeTransport,
    group_members,
    group_status,
    host_status,
)


def test_restart_plan_shows_the_argv_and_warns_when_the_service_is_up() -> None:
    st = host_status("web-1")
    plan = actions.restart("web-1", st.services[0])
    assert plan.runs == ["systemctl restart web.service"]
    assert plan.path == "/api/v1/services/web/restart"
    assert plan.title == "restart web on web-1"
    assert any("is up" in w for w in plan.warnings)
    down = host_status("web-1", down=True).services[0]
    assert not any("is up" in w for w in actions.restart("web-1", down).warnings)


def test_a_service_without_restart_command_has_no_plan() -> None:
    svc = (
        host_status("web-1")
        .services[0]
        .model_copy(update={"restartable": False, "restart_command": None})
    )
    with pytest.raises(ValueError, match="no restart command"):
        actions.restart("web-1", svc)


def test_runbook_and_probe_plans() -> None:
    st = host_status("web-1")
    book = actions.run_runbook("web-1", st.runbooks[0])
    assert book.runs == ["app cache flush"] and book.warnings == ["drop the app cache"]
    probe = actions.run_probe("web-1", st.probes[0])
    assert probe.runs == ["http probe: GET http://127.0.0.1:8080/health"]


def test_execute_sends_token_actor_and_reason() -> None:
    t = FakeTransport("web-1", host_status("web-1"))
    plan = actions.restart("web-1", t.status.services[0])
    outcome = actions.execute(AgentClient(t), plan, "alice@bastion", "disk full")
    assert outcome.ok and outcome.message == "exit 0 in 0.50s"
    path, body, headers = t.posts[0]
    assert path == "/api/v1/services/web/restart" and body == {"reason": "disk full"}
    assert headers["Authorization"] == "Bearer fake-token-0123456789"
    assert headers["X-Hadeck-Actor"] == "alice@bastion"


def test_execute_turns_refusals_and_outages_into_outcomes() -> None:
    t = FakeTransport("web-1", host_status("web-1"))
    plan = actions.restart("web-1", t.status.services[0])
    t.reachable = False
    out = actions.execute(AgentClient(t), plan, "alice", "")
    assert not out.ok and out.message.startswith("web-1 unreachable: ")

    class Refusing(FakeTransport):
        def request(self, method, path, **kw):  # type: ignore[no-untyped-def]
            return Response(409, b'{"error": "web depends on db, which is down"}')

    out = actions.execute(AgentClient(Refusing("web-1", t.status)), plan, "alice", "")
    assert not out.ok and out.message == "web-1 refused: web depends on db, which is down"


def test_operator_identity_is_a_valid_actor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUDO_USER", "alice smith")
    actor = actions.operator_identity()
    assert actor.startswith("alice_smith@") and " " not in actor and len(actor) <= 64


# -- HA groups --------------------------------------------------------------------------


def pg(**update: object) -> GroupStatus:
    return group_status("db-01", "primary").model_copy(update=update)


def unhealthy_primary() -> GroupStatus:
    members = group_members()
    members[0] = members[0].model_copy(update={"healthy": False, "note": "postgres is down"})
    return group_status("db-04", "standby", members)


def test_switchover_to_a_standby_names_both_hooks_and_sends_the_target() -> None:
    plan = actions.switchover("db-04", pg(), "db-04")
    assert plan.host == "db-04" and plan.path == "/api/v1/groups/pg/switchover"
    assert plan.body == {"to": "db-04"} and plan.type_to_confirm is None
    assert plan.title == "switchover pg from db-01 to db-04"
    assert plan.runs[0] == "db-01 runs its demote hook and releases the lease of pg"
    with pytest.raises(ValueError, match="already the primary"):
        actions.switchover("db-01", pg(), "db-01")


def agent_plan(**kw: Any) -> AgentPlan:
    fields: dict[str, Any] = {
        "action": "switchover",
        "target": "pg",
        "ok": True,
        "refusal": None,
        "status": 202,
        "steps": ["db-01 runs its demote hook", "db-04 (lag 0.4s, priority 50) promotes"],
        "warnings": ["clients connected to db-01 are cut when it demotes"],
        "from_member": "db-01",
        "to_member": "db-04",
        "candidates": [
            PlanCandidate(member="db-04", healthy=True, lag=0.4, priority=50, note="eligible",
                          rank=1),
            PlanCandidate(member="db-07", healthy=True, lag=31.0, priority=90,
                          note="lag 31.0s > max_lag 10s", rank=None),
        ],
    }  # fmt: skip
    return AgentPlan(**{**fields, **kw})


def test_the_agents_plan_replaces_the_consoles_description_and_fixes_the_target() -> None:
    # Without a target the agent chose db-04: the request names it, so what the operator
    # confirms is what happens (if db-04 stops being eligible, the agent refuses).
    plan = actions.with_agent_plan(actions.switchover("db-01", pg(), None), agent_plan())
    assert plan.body == {"to": "db-04"}
    assert plan.title == "switchover pg from db-01 to db-04"
    assert plan.runs == [
        "db-01 runs its demote hook",
        "db-04 (lag 0.4s, priority 50) promotes",
        "standbys as the agents rank them: 1. db-04 (lag 0.4s, priority 50); "
        "db-07: lag 31.0s > max_lag 10s",
    ]
    assert plan.warnings == ["clients connected to db-01 are cut when it demotes"]
    assert plan.source == "db-01's agent"


def test_without_the_agents_plan_the_dialog_says_why() -> None:
    plan = actions.without_agent_plan(actions.pause("db-01", pg()), "agent api_version 2")
    assert plan.source == "the console"
    assert plan.warnings[0].startswith("no preview from db-01's agent (agent api_version 2)")


def test_forced_failover_asks_for_the_group_name_and_sends_it() -> None:
    plan = actions.failover("db-04", unhealthy_primary(), "db-04")
    assert plan.path == "/api/v1/groups/pg/failover" and plan.type_to_confirm == "pg"
    assert plan.body == {"to": "db-04", "confirm": "pg"}
    assert any("promote hook" in r for r in plan.runs)
    with pytest.raises(ValueError, match="already holds the lease"):
        actions.failover("db-01", pg(), "db-01")
    merged = actions.with_agent_plan(plan, agent_plan(action="failover", confirm="pg"))
    assert merged.body == {"to": "db-04", "confirm": "pg"} and merged.type_to_confirm == "pg"


def test_pause_and_resume() -> None:
    pause = actions.pause("db-01", pg())
    assert pause.path == "/api/v1/groups/pg/pause" and pause.body == {}
    assert "etcd http://10.0.0.9:2379" in pause.runs[0]
    resume = actions.resume("db-01", pg(paused=True))
    assert resume.path == "/api/v1/groups/pg/resume"


def test_drain_and_ready_need_haproxy_in_the_inventory() -> None:
    with pytest.raises(ValueError, match=r"add a top-level `haproxy: \{socket: "):
        actions.drain("db-01", pg(), "db-01", None)
    other = Haproxy(socket=Path("/run/haproxy/admin.sock"), backends={"redis": "redis_primary"})
    with pytest.raises(ValueError, match="no HAProxy backend for group pg"):
        actions.drain("db-01", pg(), "db-01", other)
    cfg = Haproxy(socket=Path("/run/haproxy/admin.sock"), backends={"pg": "pg_primary"})
    plan = actions.drain("db-04", pg(), "db-04", cfg)
    assert plan.runs == ["set server pg_primary/db-04 state drain"]
    assert plan.haproxy is not None and plan.haproxy.socket == Path("/run/haproxy/admin.sock")
    assert plan.title == "drain db-04 in HAProxy backend pg_primary"
    primary = actions.drain("db-01", pg(), "db-01", cfg)
    assert any("db-01 is the primary" in w for w in primary.warnings)
    assert actions.ready("db-04", pg(), "db-04", cfg).runs == [
        "set server pg_primary/db-04 state ready"
    ]


def test_haproxy_plans_run_through_the_runtime_api_not_an_agent() -> None:
    t = FakeTransport("db-01", host_status("db-01"))
    cfg = Haproxy(socket=Path("/run/h.sock"), timeout=1.5, backends={"pg": "pg_primary"})
    calls: list[tuple[object, ...]] = []

    class Runtime(HaproxyRuntime):
        def set_state(self, backend: str, server: str, state: AdminState) -> None:
            calls.append((self.socket_path, self.timeout, backend, server, state))
            if server == "db-09":
                raise HaproxyError(self.socket_path, "set server", "No such server.")

    out = actions.execute(
        AgentClient(t), actions.drain("db-01", pg(), "db-04", cfg), "alice", "", Runtime
    )
    assert out.ok and out.message == "HAProxy: pg_primary/db-04 is now drain"
    assert calls == [(Path("/run/h.sock"), 1.5, "pg_primary", "db-04", "drain")]
    assert t.posts == []
    bad = actions.execute(
        AgentClient(t), actions.ready("db-01", pg(), "db-09", cfg), "alice", "", Runtime
    )
    assert not bad.ok and bad.message.endswith("No such server.")


def test_group_actions_send_their_fields_and_report_the_group_result() -> None:
    t = FakeTransport("db-04", host_status("db-04", groups=[group_status("db-04", "standby")]))
    plan = actions.failover("db-04", unhealthy_primary(), "db-04")
    out = actions.execute(AgentClient(t), plan, "alice@bastion", "db-01 lost its disk")
    path, body, _ = t.posts[0]
    assert path == "/api/v1/groups/pg/failover"
    assert body == {"to": "db-04", "confirm": "pg", "reason": "db-01 lost its disk"}
    assert out.ok and out.message == "db-04 is primary after 2.1s"
    assert isinstance(out.result, GroupActionResult) and out.result.to_member == "db-04"
