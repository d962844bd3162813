"""The console follows a long-running action (202 + operation) to its result."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.schema import GroupActionResult
from console import agent_client
from console.agent_client import AgentClient, AgentRefused
from console.transport import Response, Transport, TransportError


def _op(
    state: str, result: dict[str, Any] | None = None, error: str | None = None
) -> dict[str, Any]:
    return {
        "kind": "operation",
        "api_version": 2,
        "id": "op-0123456789ab",
        "type": "group_switchover",
        "target": "pg",
        "actor": "ops",
        "params": {},
        "state": state,
        "created_at": 1.0,
        "finished_at": None if state == "running" else 3.0,
        "duration_seconds": 2.0,
        "progress": {"message": "waiting for b to promote"},
        "result": result or {},
        "error": error,
    }


class Scripted(Transport):
    """A 202 for the POST, then the operation as each GET finds it (a unit-test fake)."""

    describe = "scripted"

    def __init__(self, states: list[dict[str, Any]]) -> None:
        self.states, self.gets = states, 0

    def request(self, method: str, path: str, *, body=None, headers=None, timeout: float):  # type: ignore[no-untyped-def]
        if method == "POST":
            return Response(202, json.dumps(_op("running")).encode())
        assert path == "/api/v1/operations/op-0123456789ab"
        self.gets += 1
        return Response(200, json.dumps(self.states[min(self.gets, len(self.states)) - 1]).encode())

    def read_token(self, timeout: float) -> str:
        return "t" * 32

    def close(self) -> None:
        pass


RESULT = GroupActionResult(
    ok=True,
    action="switchover",
    group="pg",
    actor="ops",
    message="b is primary after 2.0s",
    from_member="a",
    to_member="b",
    duration_seconds=2.0,
    audit_seq=9,
).model_dump()


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_client, "FOLLOW_POLL", 0.001)


def test_the_result_of_a_finished_operation_is_the_actions_result() -> None:
    t = Scripted([_op("running"), _op("running"), _op("succeeded", RESULT)])
    result = AgentClient(t).act("/api/v1/groups/pg/switchover", "ops", "", 5.0)
    assert isinstance(result, GroupActionResult) and result.to_member == "b"
    assert t.gets == 3


def test_an_operation_that_ended_without_a_result_says_how_it_ended() -> None:
    t = Scripted([_op("interrupted", error="the agent stopped while this operation ran")])
    with pytest.raises(AgentRefused) as err:
        AgentClient(t).act("/api/v1/groups/pg/switchover", "ops", "", 5.0)
    assert "interrupted" in str(err.value) and "agent stopped" in str(err.value)


def test_an_operation_still_running_at_the_timeout_names_where_to_follow_it() -> None:
    t = Scripted([_op("running")])
    with pytest.raises(TransportError) as err:
        AgentClient(t).act("/api/v1/groups/pg/switchover", "ops", "", 0.05)
    assert "op-0123456789ab" in str(err.value) and "goes on" in str(err.value)
