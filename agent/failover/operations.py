"""What an operator can ask of a group: switchover, forced failover, pause, resume.

Any member's agent takes these requests: they act through the shared lease
store (a flag the members read each loop), not by calling other hosts. Every
precondition is checked before anything changes, and a refusal says which one
failed and what to do instead. Every request, done or refused, is journaled
(agent/journal.py): audit record, actions row, hadeck_actions_total, event.

The checks are one function per action that reads the lease store and answers
a Plan, so a `dry_run` and the real request can never disagree: the real one
acts on the plan it just made, or refuses with the plan's reason. A handover
outlives its request: it is a long-running operation (agent/operations.py)
that ends when the target has promoted, and cancelling it withdraws the
request if the members have not acted on it yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from agent.actions import Refused
from agent.api.errors import ApiError
from agent.events import EventLog
from agent.failover.lease import Handover, LeaseStoreError, MemberRecord, ranked
from agent.failover.member import GroupMember, Request
from agent.journal import Event, Journal
from agent.operations import Failed, Operation, Operations
from agent.schema import (
    GroupActionResult,
    GroupMemberStatus,
    GroupStatus,
    HandoverRecord,
    Plan,
    PlanCandidate,
)


def status(m: GroupMember, store_name: str) -> GroupStatus:
    h = m.health()
    leader = m.known_leader
    return GroupStatus(
        name=m.group,
        member=m.member,
        role=m.role.value,
        routed=m.is_primary(),
        healthy=h.up,
        lag=m.lag,
        priority=m.cfg.priority,
        service=m.cfg.service,
        paused=m.paused,
        leader=leader.member if leader else None,
        token=leader.token if leader else None,
        lease_ttl_left=round(leader.ttl_left, 3) if leader and leader.ttl_left else None,
        valid_for=round(v, 3) if (v := m.valid_for()) is not None else None,
        ttl=m.cfg.ttl,
        loop_wait=m.cfg.loop_wait,
        store=store_name,
        store_error=m.store_error,
        request=m.request.__dict__ if m.request else None,
        members=[_member(r) for r in m.members],
        last_handover=handover_record(m.last_handover) if m.last_handover else None,
        failsafe=m.failsafe_state(),
    )


def handover_record(h: Handover) -> HandoverRecord:
    return HandoverRecord(**{k: v for k, v in h.__dict__.items() if k != "group"})


def _member(r: MemberRecord) -> GroupMemberStatus:
    return GroupMemberStatus(**r.__dict__)


@dataclass(frozen=True)
class _Seen:
    """The group as the lease store tells it, read afresh for each request."""

    leader: str | None
    records: dict[str, MemberRecord]
    paused: bool
    #: The lease holder's fencing token: a handover is done when a newer one promoted.
    token: int | None = None
    #: A handover asked for and not yet done (nor lapsed).
    pending: Request | None = None


def _candidates(seen: _Seen, chosen: str | None) -> list[PlanCandidate]:
    """Every member but the primary: the eligible ones first, in the agents' own order (a
    named target before the rest), then the others with why they cannot take over."""
    order = [r for r in ranked(seen.records.values()) if r.member != seen.leader]
    order.sort(key=lambda r: r.member != chosen)  # stable: the rest keep their ranking
    rest = sorted(
        (r for r in seen.records.values() if r.member != seen.leader and r not in order),
        key=lambda r: r.member,
    )
    return [
        PlanCandidate(
            member=r.member,
            healthy=r.healthy,
            lag=r.lag,
            priority=r.priority,
            note=r.note,
            rank=i + 1 if i < len(order) else None,
        )
        for i, r in enumerate(order + rest)
    ]


def _lag(lag: float | None) -> str:
    return "lag unknown" if lag is None else f"lag {lag:.1f}s"


def switchover_plan(m: GroupMember, seen: _Seen, to: str | None) -> Plan:
    """Planned: the healthy primary steps down, a named (or the best) standby takes over."""
    leader, records = seen.leader, seen.records
    problem = None
    if (p := seen.pending) is not None:
        problem = (
            f"a {p.kind} to {p.to or 'the best standby'} asked by {p.actor} "
            f"{time.time() - p.at:.0f}s ago is still in progress: wait for it or cancel it"
        )
    elif seen.paused:
        problem = "the group is paused (maintenance): resume it first"
    elif leader is None:
        problem = "there is no primary to switch over from: use a failover"
    elif leader not in records or not records[leader].healthy:
        problem = f"the primary {leader} is not healthy: use a failover"
    if problem is None and to is not None:
        target = records.get(to)
        if to == leader:
            problem = f"{to} is already the primary"
        elif target is None:
            problem = f"{to} has no fresh member record (agent down or not in the group)"
        elif target.note != "eligible":
            problem = f"{to} cannot become primary: {target.note}"
    if problem is None and to is None:
        best = [r for r in ranked(records.values()) if r.member != leader]
        if not best:
            notes = "; ".join(
                f"{r.member}: {r.note}" for r in records.values() if r.member != leader
            )
            problem = f"no standby can take over ({notes or 'no standbys'})"
        else:
            to = best[0].member
    g = m.group
    steps = [
        f"{leader or 'the primary'} runs its demote hook and releases the lease of {g}",
        f"{to or 'the best standby'}"
        + (f" ({_lag(records[to].lag)}, priority {records[to].priority})" if to in records else "")
        + " takes the lease and runs its promote hook",
        f"routing follows: /groups/{g}/primary answers 200 on {to or 'the new primary'} only",
    ]
    warnings = [f"clients connected to {leader} are cut when it demotes"] if leader else []
    return Plan(
        action="switchover",
        target=g,
        ok=problem is None,
        refusal=problem,
        status=202 if problem is None else 409,
        steps=steps,
        warnings=warnings,
        from_member=leader,
        to_member=to,
        candidates=_candidates(seen, to),
    )


def failover_plan(m: GroupMember, seen: _Seen, to: str | None) -> Plan:
    """Forced: there is no healthy primary; promote `to` (default: this member)."""
    to = to or m.member
    leader, records = seen.leader, seen.records
    target = records.get(to)
    problem = None
    if leader is not None and leader in records and records[leader].healthy:
        problem = f"the primary {leader} is healthy: use a switchover (no data loss)"
    elif target is None:
        problem = f"{to} has no fresh member record (agent down or not in the group)"
    elif not target.healthy:
        problem = f"{to} cannot serve: {target.note}"
    g = m.group
    warnings = []
    if target is None or target.lag is None:
        warnings.append(
            f"{to}'s replication lag is unknown: data it has not replicated may be lost"
        )
    elif target.lag > 0:
        warnings.append(
            f"{to} lags {target.lag:.1f}s behind the primary: up to {target.lag:.1f}s of "
            "writes it has not replicated may be lost"
        )
    if seen.paused:
        warnings.append(f"{g} is paused: a forced failover still goes ahead")
    if (p := seen.pending) is not None:
        warnings.append(f"it replaces the {p.kind} to {p.to} asked by {p.actor}, not done yet")
    if problem is None and p is not None and p.kind == "failover" and p.to == to:
        problem = f"a forced failover to {to} asked by {p.actor} is already in progress"
    steps = []
    if leader is not None:
        steps.append(
            f"{leader} runs its demote hook and releases the lease of {g} if its agent still "
            f"runs; otherwise the lease expires (ttl {m.cfg.ttl:g}s)"
        )
    steps += [
        f"{to} takes the lease with a new fencing token and runs its promote hook, "
        "even if its lag is over max_lag",
        f"routing follows: /groups/{g}/primary answers 200 on {to} only",
    ]
    return Plan(
        action="failover",
        target=g,
        ok=problem is None,
        refusal=problem,
        status=202 if problem is None else 409,
        steps=steps,
        warnings=warnings,
        confirm=g,
        from_member=leader,
        to_member=to,
        candidates=_candidates(seen, to),
    )


def pause_plan(m: GroupMember, seen: _Seen, paused: bool) -> Plan:
    g = m.group
    if paused:
        steps = [
            f"set the `paused` flag of {g} in the lease store",
            "every member stops automatic failover and promotion; state is still reported",
        ]
        warnings = [f"{g} is already paused"] if seen.paused else []
        warnings.append(
            "while paused, a failing primary is not replaced: clients wait until it recovers, "
            "the group is resumed, or an operator forces a failover"
        )
    else:
        steps = [f"clear the `paused` flag of {g}", "automatic failover is active again"]
        warnings = [] if seen.paused else [f"{g} is not paused"]
        rec = seen.records.get(seen.leader or "")
        if seen.leader is None or rec is None or not rec.healthy:
            warnings.append(f"{g} has no healthy primary: a standby may be promoted at once")
    return Plan(
        action="pause" if paused else "resume",
        target=g,
        ok=True,
        refusal=None,
        status=200,
        steps=steps,
        warnings=warnings,
        from_member=seen.leader,
        to_member=seen.leader,
    )


class GroupOperations:
    def __init__(
        self,
        members: dict[str, GroupMember],
        events: EventLog,
        journal: Journal,
        operations: Operations,
    ) -> None:
        self.members, self.events, self.journal = members, events, journal
        self.operations = operations

    def _unknown(self, group: str) -> str:
        return f"no group {group!r} on this host (known: {sorted(self.members)})"

    async def _seen(self, m: GroupMember) -> _Seen:
        leader = await m.store.leader(m.group)
        records = {r.member: r for r in await m.store.members(m.group)}
        paused = await m.store.get_flag(m.group, "paused") is not None
        req = Request.parse(await m.store.get_flag(m.group, "request"))
        pending = req if req is not None and m.fresh(req) else None
        return _Seen(
            leader.member if leader else None,
            records,
            paused,
            leader.token if leader else None,
            pending,
        )

    async def plan(
        self, action: str, group: str, to: str | None = None, confirm: str | None = None
    ) -> tuple[GroupMember | None, Plan, _Seen | None]:
        """What `action` would do now, by the same checks the request runs (a forced
        failover's `confirm` included: a plan without it says the request would get 400)."""
        m = self.members.get(group)
        if m is None:
            return None, Plan.refused(action, group, 404, self._unknown(group)), None
        if action == "failover" and confirm != group:
            msg = f"a forced failover needs confirm={group!r}"
            return m, Plan.refused(action, group, 400, msg, confirm=group), None
        try:
            seen = await self._seen(m)
        except LeaseStoreError as exc:
            msg = f"the lease store does not answer: {exc}"
            return m, Plan.refused(action, group, 409, msg), None
        if action == "switchover":
            return m, switchover_plan(m, seen, to), seen
        if action == "failover":
            return m, failover_plan(m, seen, to), seen
        return m, pause_plan(m, seen, action == "pause"), seen

    async def _refuse(
        self, group: str, action: str, actor: str, params: dict[str, Any], status: int, msg: str
    ) -> Refused:
        entry = await self.journal.refused(actor, f"group_{action}", group, params, msg)
        return Refused(status, "; ".join(filter(None, [msg, entry.note()])))

    async def handover(
        self,
        action: str,
        group: str,
        to: str | None,
        actor: str,
        reason: str,
        confirm: str | None = None,
    ) -> Operation:
        """Start a switchover or forced failover: refused at once (journaled) when its plan
        says so, else the request is in the lease store and the operation follows it."""
        m, plan, seen = await self.plan(action, group, to, confirm)
        # The member it goes to, as chosen (a switchover without `to`: the agents' choice).
        params = {"to": plan.to_member or to, "asked_to": to, "reason": reason}
        if m is None or seen is None or not plan.ok:
            raise await self._refuse(
                group, action, actor, params, plan.status, plan.refusal or "refused"
            )
        req = Request(action, plan.to_member, plan.from_member, actor, reason, time.time())

        async def work(op: Operation) -> dict[str, Any]:
            return await self._follow(op, m, req, seen.token, params)

        try:
            op = self.operations.start(f"group_{action}", group, actor, params, work, defer=True)
        except sqlite3.Error as exc:  # nothing asked yet: the operator may simply retry
            raise ApiError(503, f"the agent's store does not take writes: {exc}") from None
        try:
            await m.store.set_flag(m.group, "request", req.to_json())
        except LeaseStoreError as exc:
            self.operations.discard(op)
            msg = f"the lease store does not answer: {exc}"
            raise await self._refuse(m.group, action, actor, params, 409, msg) from None
        self.operations.run(op)
        self.events.emit(
            f"group_{action}_requested",
            "warning",
            f"group {m.group}: {action} from {req.from_member or 'no primary'} to {req.to} "
            f"requested by {actor}" + (f": {reason}" if reason else "") + f" ({op.id})",
            service=m.cfg.service,
            evidence={"request": req.__dict__, "operation": op.id},
        )
        return op

    async def _done(self, m: GroupMember, req: Request, token: int | None) -> bool:
        """The target has promoted since the request (its hook succeeded, not just the key
        taken): a handover newer than the lease that was current, told by fencing token
        (both from the one lease store), not by two hosts' clocks."""
        recent = await m.store.history(m.group, 1)
        if not recent or recent[0].to_member != req.to:
            return False
        return recent[0].token > token if token is not None else recent[0].at >= req.at

    async def _follow(
        self,
        op: Operation,
        m: GroupMember,
        req: Request,
        token: int | None,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        """Wait for the target's promotion; the journal gets the outcome, whatever it is.
        A cancel withdraws the request only while the primary has not begun handing over;
        later, or once the target has promoted, the cancel is too late and says so."""
        to, leader = req.to, req.from_member
        started, t0 = time.time(), time.monotonic()
        # The demote and promote hooks, plus a loop on each side and the lease in between.
        deadline = t0 + m.cfg.hooks.demote.timeout + m.cfg.hooks.promote.timeout
        deadline += 3 * m.cfg.ttl
        holder, done = leader, False
        op.report(f"asked {leader or 'the group'} to hand over to {to}", fraction=0.0)
        try:
            while time.monotonic() < deadline and not done:
                await asyncio.sleep(0.1)
                try:
                    current = await m.store.leader(m.group)
                    done = await self._done(m, req, token)
                except LeaseStoreError:
                    continue
                was, holder = holder, current.member if current else None
                if holder != was:
                    step = (
                        f"{holder} holds the lease, running its promote hook"
                        if holder
                        else f"{leader} released the lease"
                    )
                    op.report(step, fraction=0.5 if holder is None else 0.75)
                    self.operations.progressed(op)
        except asyncio.CancelledError:
            if op.state != "cancelling":  # the agent is stopping: the handover goes on
                message = "the agent stopped while following the handover; see the group's events"
                op.result = await self._finish(op, m, req, params, False, message, started, t0)
                raise
            with contextlib.suppress(LeaseStoreError):
                done = await self._done(m, req, token)
            if done:  # too late: it happened; the operation says so and succeeds
                message = f"{to} is primary after {time.monotonic() - t0:.1f}s (cancel too late)"
                return await self._finish(op, m, req, params, True, message, started, t0)
            if await self._begun(m, req):
                message = (
                    f"cancel too late: {leader} has begun handing over to {to}; it completes "
                    "without this operation following it (see the group's events)"
                )
            elif await self._withdraw(m, req):
                message = "cancelled: the request is withdrawn; nothing was handed over"
            else:
                message = "cancelled: stopped following; the request was no longer there"
            op.result = await self._finish(op, m, req, params, False, message, started, t0)
            raise
        duration = time.monotonic() - t0
        if done:
            message = f"{to} is primary after {duration:.1f}s"
            return await self._finish(op, m, req, params, True, message, started, t0)
        await self._withdraw(m, req)  # lapsed: no member acts on it any more either
        message = (
            f"{to} did not become primary within {deadline - t0:.0f}s "
            f"(lease holder now: {holder or 'none'}); the request is withdrawn; "
            "see the group's events"
        )
        result = await self._finish(op, m, req, params, False, message, started, t0)
        raise Failed(result["message"], result)

    async def _begun(self, m: GroupMember, req: Request) -> bool:
        """The old primary has let go or is demoting: withdrawing the request now would
        leave the election to whoever wins, not to the member the operator confirmed."""
        try:
            current = await m.store.leader(m.group)
            records = {r.member: r for r in await m.store.members(m.group)}
        except LeaseStoreError:
            return True  # cannot tell: do not touch the request
        if req.from_member is None:
            return current is not None
        if current is None or current.member != req.from_member:
            return True
        rec = records.get(req.from_member)
        return rec is not None and rec.role != "primary"

    async def _withdraw(self, m: GroupMember, req: Request) -> bool:
        """Clear the request flag if it is still this request; True when it was."""
        try:
            if Request.parse(await m.store.get_flag(m.group, "request")) == req:
                await m.store.set_flag(m.group, "request", None)
                return True
        except LeaseStoreError:
            pass
        return False

    async def _finish(self, *args: Any) -> dict[str, Any]:
        """Journal the outcome whatever happens meanwhile: a cancel that lands while the
        record is being written does not cut it short (the operation then ends as what it
        was, not `cancelled` without a result)."""
        task = asyncio.ensure_future(self._record(*args))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            return await task

    async def _record(
        self,
        op: Operation,
        m: GroupMember,
        req: Request,
        params: dict[str, Any],
        ok: bool,
        message: str,
        started: float,
        t0: float,
    ) -> dict[str, Any]:
        kind, actor = req.kind, req.actor
        duration = time.monotonic() - t0
        entry = await self.journal.finished(
            actor,
            f"group_{kind}",
            m.group,
            params,
            ok=ok,
            message=message,
            started=started,
            duration=duration,
            result={"message": message},
            event=Event(
                f"group_{kind}_finished",
                "info" if ok else "warning",
                f"group {m.group}: {kind} requested by {actor}: {message}",
                service=m.cfg.service,
                evidence={"actor": actor, "params": params},
            ),
            operation=op.id,
        )
        if ok:
            op.report(message, fraction=1.0)
        return GroupActionResult(
            ok=ok,
            action=kind,
            group=m.group,
            actor=actor,
            message="; ".join(filter(None, [message, entry.note()])),
            from_member=req.from_member,
            to_member=req.to,
            duration_seconds=round(duration, 3),
            audit_seq=entry.seq,
            audit_error=entry.error,
        ).model_dump(mode="json")

    async def set_paused(
        self, group: str, paused: bool, actor: str, reason: str
    ) -> GroupActionResult:
        action = "pause" if paused else "resume"
        params = {"reason": reason}
        m = self.members.get(group)
        if m is None:
            raise await self._refuse(group, action, actor, params, 404, self._unknown(group))
        started = time.time()
        value = json.dumps({"actor": actor, "reason": reason, "at": started}) if paused else None
        try:
            await m.store.set_flag(m.group, "paused", value)
        except LeaseStoreError as exc:
            msg = f"the lease store does not answer: {exc}"
            raise await self._refuse(group, action, actor, params, 409, msg) from None
        m.paused = paused
        message = (
            "paused: no automatic failover or promotion until resumed; state is still reported"
            if paused
            else "resumed: automatic failover is active again"
        )
        entry = await self.journal.finished(
            actor,
            f"group_{action}",
            group,
            params,
            ok=True,
            message=message,
            started=started,
            duration=time.time() - started,
            result={"message": message},
            event=Event(
                f"group_{'paused' if paused else 'resumed'}",
                "warning" if paused else "info",
                f"group {group} {message} ({actor}{': ' + reason if reason else ''})",
                service=m.cfg.service,
                evidence={"actor": actor, "reason": reason},
            ),
        )
        leader = m.known_leader.member if m.known_leader else None
        return GroupActionResult(
            ok=True,
            action=action,
            group=group,
            actor=actor,
            message="; ".join(filter(None, [message, entry.note()])),
            from_member=leader,
            to_member=leader,
            duration_seconds=0.0,
            audit_seq=entry.seq,
            audit_error=entry.error,
        )
