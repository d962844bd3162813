"""HA groups over HTTP: the routing endpoints HAProxy checks, and the group operations.

The routing router is safe for the public listener (reads, no token), and so is the
failsafe router: its one POST changes nothing but a promise not to take the lease, takes
no body, and needs the group's failsafe secret. The operations router belongs on the
loopback API only.
"""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from agent.api.auth import Operator, token_matches
from agent.api.base import NAME
from agent.api.errors import ApiError
from agent.api.problems import problem
from agent.config import AgentConfig
from agent.failover.failsafe import Refused
from agent.failover.lease import LeaseStoreError
from agent.failover.member import GroupMember
from agent.failover.operations import GroupOperations, handover_record
from agent.failover.operations import status as group_status
from agent.schema import (
    GroupActionRequest,
    GroupActionResult,
    GroupStatus,
    HandoverRecord,
    Operation,
    Plan,
)


class GroupsView(Protocol):
    @property
    def config(self) -> AgentConfig: ...
    @property
    def groups(self) -> dict[str, GroupMember]: ...
    @property
    def group_ops(self) -> GroupOperations: ...


def store_name(cfg: AgentConfig) -> str:
    ls = cfg.lease_store
    return f"etcd {','.join(ls.endpoints)}" if ls.kind == "etcd" else f"sqlite {ls.path or ''}"


def routing_router(agent: GroupsView) -> APIRouter:
    """What HAProxy and other routers check: 200 only where the answer is yes, right now."""
    r = APIRouter()

    def answer(group: str, yes: bool) -> JSONResponse:
        m = agent.groups.get(group)
        if m is None:
            return problem(404, f"no group {group!r} on this host")
        body = {
            "group": group,
            "member": m.member,
            "role": m.role.value,
            "token": m.lease.token if m.lease else None,
            "healthy": m.health().up,
        }
        # The margin, for a router or a checker: how long this answer holds at most.
        left = m.valid_for()
        headers = {"X-Hadeck-Lease-Valid": f"{left:.3f}"} if left is not None else {}
        return JSONResponse(body, status_code=200 if yes else 503, headers=headers)

    @r.get("/groups/{group}/primary", tags=["routing"], responses={503: {}})
    async def primary(group: NAME) -> JSONResponse:
        """200 only on the member that holds the group's lease, is promoted and healthy."""
        m = agent.groups.get(group)
        return answer(group, m is not None and m.is_primary())

    @r.get("/groups/{group}/replica", tags=["routing"], responses={503: {}})
    async def replica(group: NAME) -> JSONResponse:
        """200 on a healthy standby."""
        m = agent.groups.get(group)
        return answer(group, m is not None and m.is_replica())

    return r


MEMBER = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


def failsafe_router(agent: GroupsView) -> APIRouter:
    """Heartbeats of a primary cut off from the lease store (agent/failover/failsafe.py)."""
    r = APIRouter()

    @r.post("/groups/{group}/failsafe", tags=["routing"], responses={401: {}, 404: {}, 409: {}})
    async def heartbeat(
        group: NAME,
        member: Annotated[str, Query(pattern=MEMBER)],
        token: Annotated[int, Query(ge=0, le=2**63 - 1)],
        to: Annotated[str, Query(pattern=MEMBER)],
        nonce: Annotated[str, Query(pattern=r"^[0-9a-f]{16,64}$")],
        authorization: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        """200 and a promise not to take the lease for a ttl, signed, or 409 and why not."""
        m = agent.groups.get(group)
        if m is None or m.failsafe_secret is None:
            return problem(404, f"no group {group!r} in failsafe mode on this host")
        if not token_matches(authorization, m.failsafe_secret):
            return problem(401, "a heartbeat needs the group's failsafe secret")
        try:
            signed = await m.accept_heartbeat(member, token, to, nonce)
        except Refused as exc:
            return problem(409, str(exc))
        return JSONResponse(
            {
                "group": group,
                "member": m.member,
                "accepted": True,
                "promise": m.cfg.ttl,
                "proof": signed,
            }
        )

    return r


def group_router(agent: GroupsView) -> APIRouter:
    """Group state, history and operations (switchover, failover, pause, resume)."""
    r = APIRouter()

    def member(group: str) -> GroupMember:
        m = agent.groups.get(group)
        if m is None:
            raise ApiError(404, f"no group {group!r} on this host")
        return m

    @r.get("/api/v1/groups", response_model=list[GroupStatus], tags=["groups"])
    async def groups() -> list[GroupStatus]:
        return [group_status(m, store_name(agent.config)) for m in agent.groups.values()]

    @r.get("/api/v1/groups/{group}", response_model=GroupStatus, tags=["groups"])
    async def group(group: NAME) -> GroupStatus:
        return group_status(member(group), store_name(agent.config))

    @r.get("/api/v1/groups/{group}/history", response_model=list[HandoverRecord], tags=["groups"])
    async def history(
        group: NAME, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> list[HandoverRecord]:
        """Handovers, newest first: when, from, to, why, who, and how long each step took."""
        m = member(group)
        try:
            entries = await m.store.history(group, limit)
        except LeaseStoreError as exc:
            raise ApiError(409, f"the lease store does not answer: {exc}") from None
        return [handover_record(e) for e in entries]

    async def handover(
        action: str, group: str, actor: str, body: GroupActionRequest | None
    ) -> Plan | JSONResponse:
        b = body or GroupActionRequest()
        if b.dry_run:
            return (await agent.group_ops.plan(action, group, b.to, b.confirm))[1]
        op = await agent.group_ops.handover(action, group, b.to, actor, b.reason, b.confirm)
        return JSONResponse(op.model().model_dump(mode="json"), status_code=202)

    async def pausing(
        group: str, paused: bool, actor: str, body: GroupActionRequest | None
    ) -> GroupActionResult | Plan:
        b = body or GroupActionRequest()
        if b.dry_run:
            return (await agent.group_ops.plan("pause" if paused else "resume", group))[1]
        return await agent.group_ops.set_paused(group, paused, actor, b.reason)

    @r.post("/api/v1/groups/{group}/switchover", response_model=Plan,
            tags=["groups"], responses={202: {"model": Operation}})  # fmt: skip
    async def switchover(
        group: NAME, actor: Operator, body: GroupActionRequest | None = None
    ) -> Plan | JSONResponse:
        """Planned handover from the healthy primary to `to` (default: the best standby):
        `202` with the operation that follows it to the target's promotion; refused at once
        when a precondition fails. `dry_run: true`: the plan (ranking, blockers), `200`."""
        return await handover("switchover", group, actor, body)

    @r.post("/api/v1/groups/{group}/failover", response_model=Plan,
            tags=["groups"], responses={202: {"model": Operation}})  # fmt: skip
    async def failover(
        group: NAME, actor: Operator, body: GroupActionRequest | None = None
    ) -> Plan | JSONResponse:
        """Forced promotion of `to` (default: this member) when no healthy primary exists;
        `confirm` must be the group's name. Data not yet replicated to `to` may be lost.
        `202` with its operation; `dry_run: true` answers the plan."""
        return await handover("failover", group, actor, body)

    @r.post("/api/v1/groups/{group}/pause", response_model=GroupActionResult | Plan,
            tags=["groups"])  # fmt: skip
    async def pause(
        group: NAME, actor: Operator, body: GroupActionRequest | None = None
    ) -> GroupActionResult | Plan:
        """Maintenance: no automatic failover or promotion; state is still reported."""
        return await pausing(group, True, actor, body)

    @r.post("/api/v1/groups/{group}/resume", response_model=GroupActionResult | Plan,
            tags=["groups"])  # fmt: skip
    async def resume(
        group: NAME, actor: Operator, body: GroupActionRequest | None = None
    ) -> GroupActionResult | Plan:
        return await pausing(group, False, actor, body)

    return r
