"""A console reads agents one api_version older or newer than its own (a fleet upgrades host
by host): unknown fields are ignored, a version-1 answer (no api_version, no kind) still
parses, results are told apart by `kind`, and an agent too far away is a clear error."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from agent.schema import API_VERSION, ActionRequest, GroupActionResult, HostStatus, sent_api_version
from console.agent_client import AgentClient
from console.transport import Response, Transport, TransportError
from tests.support.fake_fleet import host_status


class Canned(Transport):
    """Answers every request with one canned body (a unit-test fake, not an agent)."""

    describe = "canned"

    def __init__(self, body: Any, status: int = 200) -> None:
        self.body, self.status = body, status

    def request(self, method: str, path: str, *, body=None, headers=None, timeout: float):  # type: ignore[no-untyped-def]
        return Response(self.status, json.dumps(self.body).encode())

    def read_token(self, timeout: float) -> str:
        return "t" * 32

    def close(self) -> None:
        pass


def _answer() -> dict[str, Any]:
    return json.loads(host_status("web-1").model_dump_json())


def _as_version_1(answer: dict[str, Any]) -> dict[str, Any]:
    """What an agent from before api_version sent: neither `api_version` nor `kind`."""
    answer.pop("api_version", None)
    answer.pop("kind", None)
    return answer


def test_an_answer_with_fields_this_console_does_not_know_is_read() -> None:
    answer = _answer()
    answer["api_version"] = API_VERSION + 1
    answer["brand_new"] = {"x": 1}
    answer["services"][0]["new_service_field"] = "y"
    answer["probes"][0]["last"]["new_result_field"] = 3
    status = AgentClient(Canned(answer)).status()
    assert status.host == "web-1" and status.services[0].name == "web"
    assert status.api_version == API_VERSION + 1


def test_an_answer_from_the_previous_api_version_is_read() -> None:
    answer = _answer()
    answer["api_version"] = API_VERSION - 1
    status = AgentClient(Canned(answer)).status()
    assert status.host == "web-1" and sent_api_version(status) == API_VERSION - 1


def test_an_agent_from_before_api_version_is_told_to_upgrade() -> None:
    with pytest.raises(TransportError) as err:
        AgentClient(Canned(_as_version_1(_answer()))).status()
    assert "api_version 1" in str(err.value) and "upgrade the agent" in str(err.value)


def test_an_agent_two_versions_away_is_refused_with_both_versions() -> None:
    answer = _answer()
    answer["api_version"] = API_VERSION + 2
    with pytest.raises(TransportError) as err:
        AgentClient(Canned(answer)).status()
    assert f"api_version {API_VERSION + 2}" in str(err.value)
    assert "upgrade the console" in str(err.value)


def test_an_answer_missing_a_field_names_the_field() -> None:
    answer = _answer()
    del answer["services"][0]["state"]
    with pytest.raises(TransportError) as err:
        AgentClient(Canned(answer)).status()
    assert "services.0.state" in str(err.value)


def _group_result(**extra: Any) -> dict[str, Any]:
    return {
        "ok": True,
        "action": "switchover",
        "group": "pg",
        "actor": "ops",
        "message": "b is primary after 1.0s",
        "from_member": "a",
        "to_member": "b",
        "duration_seconds": 1.0,
        "audit_seq": 7,
        **extra,
    }


def _action_result(**extra: Any) -> dict[str, Any]:
    return {
        "ok": True,
        "action": "restart",
        "target": "web",
        "actor": "ops",
        "started_at": 1.0,
        "duration_seconds": 0.5,
        "message": "exit 0",
        "audit_seq": 3,
        **extra,
    }


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (_group_result(), "group_action"),  # api_version 1: told apart by shape
        (_action_result(), "action"),
        (_group_result(kind="group_action", api_version=2, extra_field=1), "group_action"),
        (_action_result(kind="action", api_version=3, extra_field=1), "action"),
    ],
)
def test_results_are_told_apart_by_kind_or_by_shape_from_old_agents(body, kind) -> None:
    result = AgentClient(Canned(body)).act("/api/v1/x", "ops", "why", 5.0)
    assert result.kind == kind
    assert isinstance(result, GroupActionResult) == (kind == "group_action")


def test_the_agent_still_refuses_unknown_fields_in_what_it_receives() -> None:
    with pytest.raises(ValidationError):
        ActionRequest.model_validate({"reason": "x", "force": True})


def test_answers_the_agent_builds_say_their_version() -> None:
    sent = json.loads(host_status("web-1").model_dump_json())
    assert sent["api_version"] == API_VERSION
    assert HostStatus.model_validate(sent).model_fields_set >= {"api_version"}
