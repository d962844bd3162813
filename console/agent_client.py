"""Typed calls to one agent's API over whichever transport reaches it.

Blocking, like the transports: the console runs these in worker threads. Every
answer is parsed into the agent's own wire models (agent/schema.py), which
ignore fields this console does not know: a fleet is upgraded host by host, and
the console reads agents one `api_version` older or newer than its own. An
agent further away, or an answer that does not parse, is an error that names
the endpoint and both versions, not a KeyError three screens later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import quote

from pydantic import TypeAdapter, ValidationError

from agent.schema import (
    API_VERSION,
    ActionResult,
    AuditRecord,
    Event,
    GroupActionResult,
    HandoverRecord,
    HostStatus,
    Operation,
    Plan,
    Result,
    sent_api_version,
)
from console.transport import Transport, TransportError

M = TypeVar("M")

#: How often an operation (202) is polled while the console waits for its result.
FOLLOW_POLL = 0.25
#: The first api_version whose agents answer `dry_run` with a plan.
DRY_RUN_SINCE = 3


class AgentRefused(Exception):
    """The agent answered, but said no (4xx); the message is the agent's own."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class AgentClient:
    def __init__(self, transport: Transport, timeout: float = 5.0) -> None:
        self.transport = transport
        self.timeout = timeout
        self._token: str | None = None
        self._token_lock = threading.Lock()

    def _get(self, path: str, adapter: TypeAdapter[M], **params: Any) -> M:
        query = "&".join(f"{k}={v}" for k, v in params.items() if v is not None)
        r = self.transport.request(
            "GET", f"{path}?{query}" if query else path, timeout=self.timeout
        )
        if r.status != 200:
            raise TransportError(f"GET {path}: HTTP {r.status}: {_error_text(r.json_or_text())}")
        try:
            return adapter.validate_json(r.body)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise TransportError(
                f"GET {path}: the agent's answer does not match this console's version "
                f"(api_version {API_VERSION}): {exc.error_count()} problem(s), first: "
                f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
            ) from None

    def status(self, recent: int = 20) -> HostStatus:
        """`recent`: results per probe for sparklines; the fleet poll asks for 0 (a slim
        answer: at a thousand hosts, parsing the full one costs the UI its frame rate)."""
        status = self._get("/api/v1/status", _HOST, recent=recent)
        version = sent_api_version(status)
        if abs(version - API_VERSION) > 1:
            raise TransportError(
                f"GET /api/v1/status: the agent speaks api_version {version}; this console "
                f"reads {API_VERSION - 1} to {API_VERSION + 1}: upgrade the "
                f"{'console' if version > API_VERSION else 'agent'}"
            )
        return status

    def events(self, since: int | None = None, limit: int = 200) -> list[Event]:
        return self._get("/api/v1/events", _EVENTS, since=since, limit=limit)

    def audit(self, limit: int = 200) -> list[AuditRecord]:
        return self._get("/api/v1/audit", _AUDIT, limit=limit)

    def history(self, group: str, limit: int = 50) -> list[HandoverRecord]:
        """An HA group's handovers, newest first (any member's agent answers)."""
        return self._get(f"/api/v1/groups/{quote(group, safe='')}/history", _HISTORY, limit=limit)

    def token(self) -> str:
        with self._token_lock:
            if self._token is None:
                self._token = self.transport.read_token(self.timeout)
            return self._token

    def act(
        self,
        path: str,
        actor: str,
        reason: str,
        timeout: float,
        body: Mapping[str, Any] | None = None,
    ) -> ActionResult | GroupActionResult:
        """POST a mutating action; the agent audits it with `actor` (the operator).

        `body` adds request fields to the reason (an HA group action's `to`, `confirm`).
        Service actions answer an ActionResult, group actions a GroupActionResult.
        """
        headers = {"Authorization": f"Bearer {self.token()}", "X-Hadeck-Actor": actor}
        r = self.transport.request(
            "POST", path, body={**(body or {}), "reason": reason}, headers=headers, timeout=timeout
        )
        if r.status == 401:
            with self._token_lock:
                self._token = None  # rotated on the host: read it afresh next time
        if r.status >= 400:
            raise AgentRefused(r.status, _error_text(r.json_or_text()))
        if r.status == 202:
            return self._outcome(self._follow(_OPERATION.validate_json(r.body), timeout))
        return _RESULT.validate_json(r.body)

    def plan(
        self, path: str, actor: str, timeout: float, body: Mapping[str, Any] | None = None
    ) -> Plan:
        """The agent's own plan for a mutating request (`dry_run`): what it would run, or
        why it would refuse, by its rules and state now. Only for agents of api_version 3
        or later (DRY_RUN_SINCE): an older one does not know `dry_run`."""
        headers = {"Authorization": f"Bearer {self.token()}", "X-Hadeck-Actor": actor}
        r = self.transport.request(
            "POST", path, body={**(body or {}), "dry_run": True}, headers=headers, timeout=timeout
        )
        if r.status == 401:
            with self._token_lock:
                self._token = None
        if r.status != 200:
            raise AgentRefused(r.status, _error_text(r.json_or_text()))
        try:
            return _PLAN.validate_json(r.body)
        except ValidationError:
            raise TransportError(
                f"POST {path} (dry_run): the agent did not answer a plan"
            ) from None

    def operation(self, op_id: str) -> Operation:
        return self._get(f"/api/v1/operations/{quote(op_id, safe='')}", _OPERATION)

    def _follow(self, op: Operation, timeout: float) -> Operation:
        """Poll a long-running operation (202) until it ends or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while op.state in ("running", "cancelling"):
            if time.monotonic() >= deadline:
                raise TransportError(
                    f"operation {op.id} ({op.type} {op.target}) still {op.state} after "
                    f"{timeout:g}s; it goes on on the host (GET /api/v1/operations/{op.id})"
                )
            time.sleep(FOLLOW_POLL)
            op = self.operation(op.id)
        return op

    @staticmethod
    def _outcome(op: Operation) -> ActionResult | GroupActionResult:
        """The result the operation's work returned; an operation that ended without one
        (cancelled, interrupted, an internal error) is a refusal that says how it ended."""
        if op.result.get("kind") in ("action", "group_action"):
            return _RESULT.validate_python(op.result)
        raise AgentRefused(409, f"operation {op.id} {op.state}: {op.error or 'no result'}")


def _error_text(payload: Any) -> str:
    if isinstance(payload, dict) and "error" in payload:
        return str(payload["error"])
    return str(payload)[:200]


_HOST: TypeAdapter[HostStatus] = TypeAdapter(HostStatus)
_EVENTS: TypeAdapter[list[Event]] = TypeAdapter(list[Event])
_AUDIT: TypeAdapter[list[AuditRecord]] = TypeAdapter(list[AuditRecord])
_HISTORY: TypeAdapter[list[HandoverRecord]] = TypeAdapter(list[HandoverRecord])
_OPERATION: TypeAdapter[Operation] = TypeAdapter(Operation)
_PLAN: TypeAdapter[Plan] = TypeAdapter(Plan)
_RESULT: TypeAdapter[ActionResult | GroupActionResult] = TypeAdapter(Result)
