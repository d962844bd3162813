"""Routes of long-running operations: list, follow, cancel (agent/operations.py)."""

from __future__ import annotations

import time
from typing import Annotated, Protocol

from fastapi import APIRouter, Path, Query

from agent.api.auth import Operator
from agent.api.errors import ApiError
from agent.journal import Event, Journal
from agent.operations import Operation as OperationRecord
from agent.operations import Operations
from agent.schema import ActionRequest, Operation, OperationState, Plan

OP_ID = Annotated[str, Path(pattern=r"^op-[0-9a-f]{12}$")]


class OperationsView(Protocol):
    @property
    def operations(self) -> Operations: ...
    @property
    def journal(self) -> Journal: ...


def router(agent: OperationsView) -> APIRouter:
    r = APIRouter(tags=["operations"])

    @r.get("/api/v1/operations", response_model=list[Operation])
    async def operations(
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        state: OperationState | None = None,
    ) -> list[Operation]:
        """Newest first: running ones and those finished (kept 30 days), across restarts."""
        return [op.model() for op in agent.operations.recent(limit, state)]

    @r.get("/api/v1/operations/{op_id}", response_model=Operation)
    async def operation(op_id: OP_ID) -> Operation:
        op = agent.operations.get(op_id)
        if op is None:
            raise ApiError(404, f"no operation {op_id!r} on this host")
        return op.model()

    @r.post("/api/v1/operations/{op_id}/cancel", response_model=Operation | Plan)
    async def cancel(
        op_id: OP_ID, actor: Operator, body: ActionRequest | None = None
    ) -> Operation | Plan:
        """Cancel a running operation; answers once its work has stopped. Cancelling one
        that has finished changes nothing and says so in its state."""
        op = agent.operations.get(op_id)
        if body is not None and body.dry_run:
            return _cancel_plan(op_id, op)
        if op is None:
            raise ApiError(404, f"no operation {op_id!r} on this host")
        was, started, t0 = op.state, time.time(), time.monotonic()
        op = await agent.operations.cancel(op_id) or op
        # It took effect only if the work ended as cancelled: work that finished first, or
        # that was past the point of no return, ends as what it was.
        ok = op.state == "cancelled"
        params = {"type": op.type, "target": op.target, "reason": body.reason if body else ""}
        outcome = "cancelled" if ok else f"not cancelled: it ended {op.state}"
        await agent.journal.finished(
            str(actor),
            "operation_cancel",
            op_id,
            params,
            ok=ok,
            message=outcome,
            started=started,
            duration=time.monotonic() - t0,
            result={"state_before": was, "state": op.state},
            event=Event(
                "operation_cancel",
                "warning" if ok else "info",
                f"{op.type} {op.target} ({op_id}): cancel by {actor}: {outcome}",
            ),
            operation=op_id,
        )
        return op.model()

    return r


def _cancel_plan(op_id: str, op: OperationRecord | None) -> Plan:
    if op is None:
        return Plan.refused("cancel", op_id, 404, f"no operation {op_id!r} on this host")
    steps = [f"stop {op.type} {op.target} ({op.id}) and wait for its work to end"]
    if op.type in ("group_switchover", "group_failover"):
        steps.append(
            "withdraw the handover request if the primary has not begun handing over; "
            "after that the handover completes (the cancel says it came too late)"
        )
    warnings = [] if op.state == "running" else [f"it has already ended ({op.state}): no change"]
    return Plan(
        action="cancel", target=op_id, ok=True, refusal=None, status=200, steps=steps,
        warnings=warnings,
    )  # fmt: skip
