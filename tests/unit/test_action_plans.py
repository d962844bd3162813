"""Plans say exactly what will run before anything runs; execution reports, never raises."""

from __future__ import annotations

import pytest

from console import actions
from console.agent_client import AgentClient
from console.transport import Response
from tests.support.fake_fleet import FakeTransport, host_status


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
