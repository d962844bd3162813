"""What an operator can ask of a group: switchover, forced failover, pause, resume.

Any member's agent takes these requests: they act through the shared lease
store (a flag the members read each loop), not by calling other hosts. Every
precondition is checked before anything changes, and a refusal says which one
failed and what to do instead. Every request, done or refused, is journaled
(agent/journal.py): audit record, actions row, hadeck_actions_total, event.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from agent.actions import Refused
from agent.events import EventLog
from agent.failover.lease import Handover, LeaseStoreError, MemberRecord
from agent.failover.member import GroupMember, Request
from agent.journal import Event, Journal
from agent.schema import (
    GroupActionResult,
    GroupMemberStatus,
    GroupStatus,
    HandoverRecord,
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
    )


def handover_record(h: Handover) -> HandoverRecord:
    return HandoverRecord(**{k: v for k, v in h.__dict__.items() if k != "group"})


def _member(r: MemberRecord) -> GroupMemberStatus:
    return GroupMemberStatus(**r.__dict__)


class GroupOperations:
    def __init__(self, members: dict[str, GroupMember], events: EventLog, journal: Journal) -> None:
        self.members, self.events, self.journal = members, events, journal

    async def _member(
        self, group: str, action: str, actor: str, params: dict[str, Any]
    ) -> GroupMember:
        m = self.members.get(group)
        if m is None:
            msg = f"no group {group!r} on this host (known: {sorted(self.members)})"
            raise await self._refuse(group, action, actor, params, 404, msg)
        return m

    async def _refuse(
        self, group: str, action: str, actor: str, params: dict[str, Any], status: int, msg: str
    ) -> Refused:
        entry = await self.journal.refused(actor, f"group_{action}", group, params, msg)
        return Refused(status, "; ".join(filter(None, [msg, entry.note()])))

    async def _fresh(
        self, m: GroupMember, action: str, actor: str, params: dict[str, Any]
    ) -> tuple[str | None, dict[str, MemberRecord]]:
        try:
            leader = await m.store.leader(m.group)
            records = {r.member: r for r in await m.store.members(m.group)}
        except LeaseStoreError as exc:
            msg = f"the lease store does not answer: {exc}"
            raise await self._refuse(m.group, action, actor, params, 409, msg) from None
        return (leader.member if leader else None), records

    async def switchover(
        self, group: str, to: str | None, actor: str, reason: str
    ) -> GroupActionResult:
        """Planned: the healthy primary steps down, a named (or the best) standby takes over."""
        params = {"to": to, "reason": reason}
        m = await self._member(group, "switchover", actor, params)
        leader, records = await self._fresh(m, "switchover", actor, params)
        paused = await self._paused(m, "switchover", actor, params)
        problem = None
        if paused:
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
            best = sorted(
                (r for r in records.values() if r.member != leader and r.note == "eligible"),
                key=lambda r: (r.lag or 0.0, -r.priority, r.member),
            )
            if not best:
                notes = "; ".join(
                    f"{r.member}: {r.note}" for r in records.values() if r.member != leader
                )
                problem = f"no standby can take over ({notes or 'no standbys'})"
            else:
                to = best[0].member
        if problem is not None:
            raise await self._refuse(m.group, "switchover", actor, params, 409, problem)
        return await self._request(m, "switchover", leader, to, actor, reason, params)

    async def failover(
        self, group: str, to: str | None, confirm: str | None, actor: str, reason: str
    ) -> GroupActionResult:
        """Forced: there is no healthy primary; promote `to` (default: this member)."""
        m = await self._member(group, "failover", actor, {"to": to, "reason": reason})
        to = to or m.member
        params = {"to": to, "reason": reason}
        if confirm != group:
            msg = f"a forced failover needs confirm={group!r}"
            raise await self._refuse(group, "failover", actor, params, 400, msg)
        leader, records = await self._fresh(m, "failover", actor, params)
        target = records.get(to)
        problem = None
        if leader is not None and leader in records and records[leader].healthy:
            problem = f"the primary {leader} is healthy: use a switchover (no data loss)"
        elif target is None:
            problem = f"{to} has no fresh member record (agent down or not in the group)"
        elif not target.healthy:
            problem = f"{to} cannot serve: {target.note}"
        if problem is not None:
            raise await self._refuse(m.group, "failover", actor, params, 409, problem)
        return await self._request(m, "failover", leader, to, actor, reason, params)

    async def _paused(
        self, m: GroupMember, action: str, actor: str, params: dict[str, Any]
    ) -> bool:
        try:
            return await m.store.get_flag(m.group, "paused") is not None
        except LeaseStoreError as exc:
            msg = f"the lease store does not answer: {exc}"
            raise await self._refuse(m.group, action, actor, params, 409, msg) from None

    async def _request(
        self,
        m: GroupMember,
        kind: str,
        leader: str | None,
        to: str | None,
        actor: str,
        reason: str,
        params: dict[str, Any],
    ) -> GroupActionResult:
        started, t0 = time.time(), time.monotonic()
        req = Request(kind, to, leader, actor, reason, time.time())
        try:
            await m.store.set_flag(m.group, "request", req.to_json())
        except LeaseStoreError as exc:
            msg = f"the lease store does not answer: {exc}"
            raise await self._refuse(m.group, kind, actor, params, 409, msg) from None
        self.events.emit(
            f"group_{kind}_requested",
            "warning",
            f"group {m.group}: {kind} from {leader or 'no primary'} to {to} requested by {actor}"
            + (f": {reason}" if reason else ""),
            service=m.cfg.service,
            evidence={"request": req.__dict__},
        )
        # The demote and promote hooks, plus a loop on each side and the lease in between.
        deadline = t0 + m.cfg.hooks.demote.timeout + m.cfg.hooks.promote.timeout
        deadline += 3 * m.cfg.ttl
        holder = leader
        done = False
        while time.monotonic() < deadline and not done:
            await asyncio.sleep(0.1)
            try:
                current = await m.store.leader(m.group)
                # Done when the target has promoted (its hook succeeded), not just taken the key.
                recent = await m.store.history(m.group, 1)
            except LeaseStoreError:
                continue
            holder = current.member if current else None
            done = bool(recent) and recent[0].to_member == to and recent[0].at >= req.at
        ok = done
        duration = time.monotonic() - t0
        message = (
            f"{to} is primary after {duration:.1f}s"
            if ok
            else f"{to} did not become primary within {deadline - t0:.0f}s "
            f"(lease holder now: {holder or 'none'}); see the group's events"
        )
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
        )
        return GroupActionResult(
            ok=ok,
            action=kind,
            group=m.group,
            actor=actor,
            message="; ".join(filter(None, [message, entry.note()])),
            from_member=leader,
            to_member=to,
            duration_seconds=round(duration, 3),
            audit_seq=entry.seq,
            audit_error=entry.error,
        )

    async def set_paused(
        self, group: str, paused: bool, actor: str, reason: str
    ) -> GroupActionResult:
        action = "pause" if paused else "resume"
        params = {"reason": reason}
        m = await self._member(group, action, actor, params)
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
