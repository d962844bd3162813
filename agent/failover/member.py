"""One host's part in one HA group: hold the lease while primary, take it when it is free.

Safety comes first, and comes from time, not from messages:

- The primary renews its lease every `loop_wait`. A renewal that succeeded when
  it started at boot clock time t keeps the primary valid until
  `t + ttl - safety` (safety = `loop_wait`). The store cannot expire the key
  before `t + ttl`, so the primary always stops `safety` seconds before anyone
  else can take over. The routing endpoint checks that deadline on every
  request, so even a frozen loop (SIGSTOP, a stuck hook) stops answering 200
  at the deadline; the loop wakes at the deadline to run the demote hook.
- A standby takes the key only through the store's compare-and-swap, only when
  there is no key, and only if it is healthy, within the lag limit, and the
  group is not paused; among several, the best ranked tries first (lowest lag,
  then highest priority, then name) and the others wait a rank-based delay.
- The fencing token (the acquisition's number, which only grows) is passed to
  the promote hook as HADECK_FENCING_TOKEN.
- Fast path: when the primary's own service stays down for `failover_after`,
  the primary demotes and releases the key at once instead of letting it
  expire, so a standby takes over within a loop or two.

Hooks run in background tasks so renewals continue while a slow promote hook
runs; the member is routed to only once the promote hook has succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from agent import clock, commands
from agent.config import CommandStep, Group
from agent.events import EventLog
from agent.failover import failsafe, routing_fence
from agent.failover.fencing import Fencing
from agent.failover.lease import (
    Handover,
    Leader,
    LeaseStore,
    LeaseStoreError,
    MemberRecord,
    Release,
    certainly_free,
    ranked,
)
from agent.failover.metrics import GroupMetrics
from agent.journal import AUDIT_WAIT, Event, Journal

log = logging.getLogger("hadeck.failover")

ACTOR = "hadeck-agent"


class Role(StrEnum):
    STANDBY = "standby"
    PROMOTING = "promoting"
    PRIMARY = "primary"
    DEMOTING = "demoting"


@dataclass(frozen=True)
class ServiceHealth:
    """What the member needs to know about its local service, read fresh each loop."""

    up: bool
    down_since: float | None  # wall clock; None when not down
    detail: str  # the failing probes, in words
    recovery: str | None  # the recovery ladder's state, if any


@dataclass(frozen=True)
class Request:
    """A switchover or forced failover an operator asked for (stored as a group flag)."""

    kind: str  # switchover | failover
    to: str | None
    from_member: str | None
    actor: str
    reason: str
    at: float

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def parse(cls, text: str | None) -> Request | None:
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(**{k: data[k] for k in data if k in cls.__dataclass_fields__})
        except (ValueError, TypeError, KeyError):
            return None


class GroupMember:
    def __init__(
        self,
        group: str,
        cfg: Group,
        member: str,
        store: LeaseStore,
        events: EventLog,
        journal: Journal,
        health: Callable[[], ServiceHealth],
        failover_after: float,
        metrics: GroupMetrics,
        state_dir: Path | None = None,
        failsafe_secret: str | None = None,
    ) -> None:
        self.group, self.cfg, self.member = group, cfg, member
        self.store, self.events, self.journal = store, events, journal
        # Promotions and demotions being journaled: the loop never waits for the audit
        # disk (a hung one would cost it the renewals that keep the lease).
        self._records: set[asyncio.Task[object]] = set()
        self.health = health
        self.metrics = metrics
        self.failover_after = failover_after
        self.safety = cfg.loop_wait
        self.role = Role.STANDBY
        self.lease: Leader | None = None
        self.valid_until = 0.0  # boot clock; meaningful while PROMOTING or PRIMARY
        self.lag: float | None = None
        self.lag_error: str | None = None
        # What the last loop learnt from the store, for the API and the console.
        self.known_leader: Leader | None = None
        self.members: list[MemberRecord] = []
        self.paused = False
        self.request: Request | None = None
        self.store_error: str | None = None
        self.renew_failures = 0
        self.last_handover: Handover | None = None
        self._leader_gone_at: float | None = None  # boot clock: when we first saw no leader
        #: The last leader key this standby saw, and when (boot clock): what it knows of the
        #: old holder's deadline when the key vanishes (lease.certainly_free).
        self._seen: tuple[Leader, float] | None = None
        #: While a vanished key may still be its holder's: until when, and why.
        self.free_at: tuple[float, str] | None = None
        self._started = clock.now()
        #: This member's demote hook last succeeded (it serves no writes): the routing
        #: fence may be lifted (routing_fence.py).
        self._stood_down = False
        self._routing: asyncio.Task[None] | None = None
        #: Set when the fencing process fenced this member's service while it was primary.
        self._fenced_out: str | None = None
        self._hook: asyncio.Task[commands.CommandResult] | None = None
        #: The follow hook: the running one, the primary (member, token) it last followed,
        #: and when (boot clock) a failed one may run again.
        self._following: asyncio.Task[None] | None = None
        self._followed: tuple[str, int] | None = None
        self._follow_failures = 0
        self._follow_retry_at = 0.0
        self._promote_started = 0.0
        self._promotion: dict[str, Any] = {}
        #: The member that held the lease before it went free, as far as this one saw.
        self.last_holder: str | None = None
        self._acquired: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: The process that fences at the deadline if this agent cannot (fencing.py).
        #: Where a fencing process whose agent died leaves its report for the next agent.
        self.fence_reports = (state_dir or Path(".")) / f"fenced-{group}.jsonl"
        self.fencing = (
            Fencing(group, member, cfg, self._fenced, self.fence_reports)
            if Fencing.wanted(cfg)
            else None
        )
        #: Failsafe mode (failsafe.py): the primary's heartbeats, the members it last saw
        #: (as written to the store by the primary, read by the others), the promise this
        #: member gave, and since when (boot clock) this primary holds on by failsafe alone.
        self.heartbeats = (
            failsafe.Heartbeats(group, member, failsafe_secret, cfg.failsafe_timeout or 1.0)
            if cfg.failsafe is not None and failsafe_secret is not None
            else None
        )
        self.failsafe_secret = failsafe_secret if self.heartbeats is not None else None
        self.topology: dict[str, str | None] | None = None
        self.promises = (
            failsafe.PromiseFile((state_dir or Path(".")) / f"failsafe-{group}.json", cfg.ttl)
            if self.heartbeats is not None
            else None
        )
        #: The promise this member gave (one its previous run gave is kept: PromiseFile).
        self.promise: failsafe.Promise | None = self.promises.load() if self.promises else None
        self.failsafe_since: float | None = None
        self._failsafe_refused: str | None = None
        #: An acquisition is in flight: a heartbeat arriving now is refused.
        self._acquiring = False

    # -- what the routing endpoints answer ------------------------------------

    def is_primary(self) -> bool:
        """200 on /groups/<g>/primary: promoted, lease valid right now, service up."""
        return self.role is Role.PRIMARY and clock.now() < self.valid_until and self.health().up

    def is_replica(self) -> bool:
        return self.role is Role.STANDBY and self.health().up

    def valid_for(self) -> float | None:
        if self.role not in (Role.PRIMARY, Role.PROMOTING):
            return None
        return max(0.0, self.valid_until - clock.now())

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"group:{self.group}")

    def poke(self) -> None:
        """The local service changed state: look now, not at the next tick (the fast path)."""
        self._wake.set()

    async def stop(self) -> None:
        """A planned stop: a primary hands over at once instead of letting its lease expire."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.role in (Role.PRIMARY, Role.PROMOTING) or self.lease is not None:
            # Also a demote the stop cut short: run it again, to its end.
            await self._demote("the agent is stopping", {}, release=True)
        if self._routing is not None:
            self._routing.cancel()
        if self._following is not None:
            self._following.cancel()
        if self.fencing is not None:
            await self.fencing.stop()  # still holding (a failed demote): it fences, then ends
        if self.heartbeats is not None:
            await self.heartbeats.close()
        if self._records:  # what the journal has not finished yet, a little while
            await asyncio.wait(self._records, timeout=AUDIT_WAIT)

    def _journal(
        self,
        action: str,
        actor: str,
        params: dict[str, Any],
        ok: bool,
        started: float,
        duration: float,
        result: dict[str, Any],
        event: Event,
    ) -> None:
        """Audit record, actions row, hadeck_actions_total and event (agent/journal.py), in a
        task of their own so the group's loop goes on at once."""
        task = asyncio.create_task(
            self.journal.finished(
                actor,
                action,
                f"{self.group}/{self.member}",
                params,
                ok=ok,
                message=event.message,
                started=started,
                duration=duration,
                result=result,
                event=event,
            ),
            name=f"journal:{action}:{self.group}",
        )
        self._records.add(task)
        task.add_done_callback(self._recorded)

    def _recorded(self, task: asyncio.Task[object]) -> None:
        self._records.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("group %s: journaling failed: %r", self.group, exc)

    async def _run(self) -> None:
        self._started = clock.now()
        self._journal_left_reports()
        if self.fencing is not None:
            try:
                await self.fencing.start()
            except OSError as exc:  # tried again before a promotion (Fencing.arm)
                log.error("group %s: cannot start the fencing process: %s", self.group, exc)
        # Whatever this host was before the agent started, it starts as a standby: a
        # former primary must not keep serving writes on the strength of a past lease.
        self._stood_down = (await self._run_hook("demote", self.cfg.hooks.demote, {})).ok
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end the group's loop: log it, keep safe
                log.exception("group %s: loop step failed", self.group)
                if self.role is not Role.STANDBY and clock.now() >= self.valid_until:
                    await self._demote("internal error and the lease deadline passed", {}, False)
            self._publish_metrics()
            await self._sleep()

    def _publish_metrics(self) -> None:
        m = self.metrics
        m.set_role(self.group, self.member, self.role.value)
        m.routed.labels(self.group).set(1.0 if self.is_primary() else 0.0)
        m.lease_valid.labels(self.group).set(self.valid_for() or 0.0)

    async def _sleep(self) -> None:
        timeout = self.cfg.loop_wait
        if self.role in (Role.PRIMARY, Role.PROMOTING):
            # Wake exactly at the deadline, whatever the loop was doing.
            timeout = max(0.0, min(timeout, self.valid_until - clock.now()))
        elif self.free_at is not None and self.known_leader is None:
            timeout = max(0.0, min(timeout, self.free_at[0] - clock.now()))
        self._wake.clear()
        if self.role in (Role.PRIMARY, Role.PROMOTING):
            # In steps: the loop's own timer does not count a suspend, the deadline does.
            end = clock.now() + timeout
            while (left := end - clock.now()) > 0 and clock.now() < self.valid_until:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(0.25, left))
                    return
            return
        if self.role is Role.STANDBY and self.known_leader is not None and not self.paused:
            # A standby looks at the leader key more often than it runs a full loop, so a
            # released key (the fast path) is taken within a fraction of loop_wait.
            await self._watch_leader(timeout)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _watch_leader(self, timeout: float) -> None:
        deadline = clock.now() + timeout
        step = min(0.25, self.cfg.loop_wait / 4)
        pause = step
        while (left := deadline - clock.now()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(pause, left))
                return
            try:
                seen_at = clock.now()
                if (leader := await self.store.leader(self.group)) is None:
                    return
                self._seen = (leader, seen_at)
            except LeaseStoreError:
                return  # the full loop reports it
            # A key near its end is looked at again inside the margin before it, so that
            # an expiry can be told from a revoke (lease.certainly_free).
            pause = step
            if leader.ttl_left is not None:
                near = leader.ttl_left + self.store.ttl_resolution - self.safety / 2
                pause = max(0.01, min(step, near)) if near > 0 else step

    # -- one loop --------------------------------------------------------------

    async def step(self) -> None:
        if self.role in (Role.PRIMARY, Role.PROMOTING):
            await self._primary_step()
        else:
            await self._standby_step()

    async def _read_group(self) -> None:
        self.paused = await self.store.get_flag(self.group, "paused") is not None
        req = Request.parse(await self.store.get_flag(self.group, "request"))
        # One that lapsed (not done within 3 x ttl) is ignored on every path: a target whose
        # promote hook keeps failing must not take the key again and again on its strength.
        self.request = req if req is not None and self.fresh(req) else None
        await self.store.publish(self.group, self._record(), self.cfg.ttl)
        self.members = await self.store.members(self.group)
        if self.heartbeats is not None:
            await self._read_topology()

    async def _read_topology(self) -> None:
        """The primary writes the members it sees whenever the store holds anything else;
        the others read it. Until a write is known to have landed, the primary asks every
        member of the old, the stored and the new topology: asking too many is safe, a
        member the store lists and the primary never asks could take the key."""
        stored = failsafe.parse_topology(await self.store.get_flag(self.group, failsafe.FLAG))
        if self.role not in (Role.PRIMARY, Role.PROMOTING):
            self.topology = stored
            return
        seen = {m.member: m.address for m in self.members}
        seen[self.member] = self.cfg.address
        if stored != seen:
            self.topology = {**(self.topology or {}), **(stored or {}), **seen}
            await self.store.set_flag(self.group, failsafe.FLAG, failsafe.encode_topology(seen))
        self.topology = seen

    def _record(self) -> MemberRecord:
        h = self.health()
        return MemberRecord(
            member=self.member,
            healthy=h.up,
            lag=self.lag,
            priority=self.cfg.priority,
            role=self.role.value,
            note=self._ineligible(h) or "eligible",
            address=self.cfg.address,
            updated_at=time.time(),
        )

    def _failsafe_gate(self, forced: bool = False) -> str | None:
        """Why failsafe mode forbids this member to take the key now. A promise binds even
        a forced failover; being outside the topology does not bind one (an operator's way
        out when every member of the topology is gone)."""
        if self.heartbeats is None:  # failsafe mode is off for this member
            return None
        if self.promise is not None and (left := self.promise.left()) > 0:
            return (
                f"promised {self.promise.holder} (failsafe mode) not to take the lease "
                f"for {left:.1f}s more"
            )
        if not forced and self.topology is not None and self.member not in self.topology:
            return (
                "not in the failsafe topology the last primary wrote (a forced failover to "
                "this member overrides it)"
            )
        return None

    def failsafe_state(self) -> str | None:
        """Failsafe mode in a few words for the group's status; None when off or idle."""
        if self.heartbeats is None:
            return None
        if self.failsafe_since is not None:
            lasted = clock.now() - self.failsafe_since
            return f"primary by failsafe mode for {lasted:.1f}s: the lease store does not answer"
        if self._failsafe_refused is not None:
            return f"failsafe mode refused: {self._failsafe_refused}"
        if self.role is Role.PRIMARY and self.topology is not None:
            others = sorted(m for m in self.topology if m != self.member)
            return (
                "on: should the lease store stop answering, this primary stays while "
                + (", ".join(others) or "nobody else")
                + " acknowledge it"
            )
        return self._failsafe_gate()

    async def accept_heartbeat(self, sender: str, token: int, to: str, nonce: str) -> str:
        """A primary cut off from the store asks this member to let it keep its role (the
        public listener's POST /groups/<g>/failsafe). Raises Refused with why not; else the
        promise is made (in memory at once, then on disk) and the signed acknowledgement
        returned."""
        if to != self.member:
            raise failsafe.Refused(f"this is {self.member}, not {to}")
        why = failsafe.refusal(
            member=self.member,
            sender=sender,
            token=token,
            holds_or_takes=self.role in (Role.PRIMARY, Role.PROMOTING)
            or self.lease is not None
            or self._acquiring,
            leader=self.known_leader,
        )
        if why is not None:
            raise failsafe.Refused(why)
        assert self.failsafe_secret is not None and self.promises is not None
        promise = failsafe.Promise(sender, token, clock.now() + self.cfg.ttl)
        old = self.promise
        if old is None or old.left() == 0 or (old.holder, old.token) != (sender, token):
            self.events.emit(
                "group_failsafe_promised",
                "warning",
                f"group {self.group}: {sender} (token {token}) cannot reach the lease store "
                f"and keeps its role in failsafe mode; {self.member} takes no lease while "
                "its heartbeats go on",
                service=self.cfg.service,
                evidence={"group": self.group, "holder": sender, "token": token},
            )
        # Binding from here on, whatever the disk does: nothing is awaited before this.
        self.promise = promise
        try:
            await self.promises.save(promise)
        except OSError as exc:
            # Kept by this process, but a restart would forget it: not acknowledged.
            raise failsafe.Refused(f"{self.member} cannot record its promise: {exc}") from None
        return failsafe.proof(self.failsafe_secret, self.group, self.member, sender, token, nonce)

    def _ineligible(self, h: ServiceHealth) -> str | None:
        if not h.up:
            return f"service {self.cfg.service} is not up" + (f": {h.detail}" if h.detail else "")
        if self.cfg.lag is not None and self.lag is None:
            return f"lag unknown: {self.lag_error or 'not measured yet'}"
        if self.cfg.max_lag is not None and self.lag is not None and self.lag > self.cfg.max_lag:
            return f"lag {self.lag:g} exceeds max_lag {self.cfg.max_lag:g}"
        if self._following is not None:
            return "the follow hook is running"
        return self._failsafe_gate()

    def _store_failed(self, exc: LeaseStoreError) -> None:
        if self.store_error is None:
            self.events.emit(
                "group_store_unreachable",
                "warning" if self.role is Role.STANDBY else "critical",
                f"group {self.group}: lease store unreachable ({exc}); "
                + (
                    "no promotion while it is"
                    if self.role is Role.STANDBY
                    else f"primary for {self.valid_for() or 0:.1f}s more unless a renewal succeeds"
                ),
                service=self.cfg.service,
                evidence={"group": self.group, "error": str(exc), "role": self.role.value},
            )
        self.store_error = str(exc)

    def _store_ok(self) -> None:
        if self.store_error is not None:
            self.events.emit(
                "group_store_reachable",
                "info",
                f"group {self.group}: lease store answers again",
                service=self.cfg.service,
                evidence={"group": self.group, "was": self.store_error},
            )
        self.store_error = None

    async def _primary_step(self) -> None:
        assert self.lease is not None
        if self._fenced_out is not None:
            why, self._fenced_out = self._fenced_out, None
            await self._demote(f"its fencing process fenced the service ({why})", {}, True)
            return
        if clock.now() >= self.valid_until:
            await self._demote(
                "the lease could not be renewed before it could expire elsewhere",
                {
                    "renew_failures": self.renew_failures,
                    "store_error": self.store_error,
                    **({"failsafe": self._failsafe_refused} if self._failsafe_refused else {}),
                },
                release=False,
            )
            return
        started = clock.now()
        heartbeat = self.heartbeats is not None and self.role is Role.PRIMARY
        # Once a store request has failed (a renewal, or a read after one), heartbeats go
        # out beside the next renewal, not after it: a renewal into a black hole takes the
        # store's whole timeout, which would leave the round past the deadline it is meant
        # to move (with ttl at its floor, 3 x loop_wait + the store's timeout).
        beside = (
            asyncio.create_task(self._failsafe_round(started), name=f"failsafe:{self.group}")
            if heartbeat and (self.renew_failures or self.store_error is not None)
            else None
        )
        try:
            try:
                renewed = await self.store.renew(self.lease, self.cfg.ttl)
            except LeaseStoreError as exc:
                self.renew_failures += 1
                self.metrics.renew_failures.labels(self.group).inc()
                self._store_failed(exc)
                if heartbeat:
                    await (beside or self._failsafe_round(started))
                return  # still valid until the deadline; the loop wakes there
            if not renewed and self.failsafe_since is not None:
                # The lease ran out while failsafe mode held the role: the round beside
                # this renewal still counts, then the key is taken again if nobody holds it.
                if beside is not None:
                    await beside
                if await self._take_back(started):
                    return
        finally:
            # A round never outlives its step (a stop, a renewal that succeeded).
            if beside is not None and not beside.done():
                beside.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beside
        self._store_ok()
        if not renewed:
            await self._demote(
                "the lease is gone or belongs to another acquisition",
                {"token": self.lease.token},
                release=False,
            )
            return
        if clock.now() >= self.valid_until:
            # Renewed, but only after the deadline: the fencing process may already have
            # fenced the service. A primary that lapsed once steps down (and hands over).
            await self._demote(
                "the lease was renewed only after its deadline had passed",
                {"token": self.lease.token},
                release=True,
            )
            return
        self.renew_failures = 0
        self.valid_until = started + self.cfg.ttl - self.safety
        if self.fencing is not None:
            self.fencing.hold(self.valid_until, started + self.cfg.ttl)
        if self.failsafe_since is not None:
            self._failsafe_ended("the lease store answers again and the lease was renewed")
        try:
            await self._read_group()
            self.known_leader = await self.store.leader(self.group)
        except LeaseStoreError as exc:
            self._store_failed(exc)
            return
        if self.role is Role.PROMOTING:
            await self._promotion_progress()
            return
        h = self.health()
        if self._service_failed(h):
            assert h.down_since is not None
            await self._demote(
                f"service {self.cfg.service} is down on the primary: {h.detail}",
                {
                    "service": self.cfg.service,
                    "down_for": round(time.time() - h.down_since, 3),
                    "failover_after": self.failover_after,
                    "recovery": h.recovery,
                    "failing": h.detail,
                },
                release=True,
            )
            return
        req = self.request
        # An operator's forced failover is honoured even while paused; a switchover is not.
        if (
            req is not None
            and req.to != self.member
            and (req.kind == "failover" or not self.paused)
        ):
            target = next((m for m in self.members if m.member == req.to), None)
            if req.kind == "switchover" and (target is None or not target.healthy):
                self.events.emit(
                    "group_switchover_refused",
                    "warning",
                    f"group {self.group}: switchover to {req.to} not done: "
                    + ("it has no fresh member record" if target is None else target.note),
                    service=self.cfg.service,
                    evidence={"request": req.__dict__},
                )
                await self.store.set_flag(self.group, "request", None)
                return
            await self._demote(
                f"{req.kind} to {req.to or 'the best standby'} requested by {req.actor}"
                + (f": {req.reason}" if req.reason else ""),
                {"request": req.__dict__},
                release=True,
            )

    def _service_failed(self, h: ServiceHealth) -> bool:
        """The primary's service is down long enough to hand over (or its recovery gave
        up): the fast path, and no failsafe mode for it either."""
        return (
            not self.paused
            and not h.up
            and h.down_since is not None
            and (time.time() - h.down_since >= self.failover_after or h.recovery == "gave_up")
        )

    async def _failsafe_round(self, started: float) -> None:
        """The store did not answer the renewal started at `started`: ask every other member
        of the topology to let this primary go on (failsafe.py). All accept: valid until
        `started + ttl - safety`, which every promise outlasts. Any refusal: the deadline
        stays, and the loop steps down there. Never raises: a bug is a refusal."""
        try:
            await self._round(started)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("group %s: failsafe round failed", self.group)

    async def _round(self, started: float) -> None:
        assert self.heartbeats is not None and self.lease is not None
        topology = self.topology
        h = self.health()
        if self._service_failed(h):
            refused = {"": f"service {self.cfg.service} is down on this primary: {h.detail}"}
        elif topology is None or self.member not in topology:
            refused = {"": "no failsafe topology was written while the store answered"}
        else:
            peers = {m: a for m, a in topology.items() if m != self.member}
            answers = await self.heartbeats.round(peers, self.lease.token)
            refused = {m: why for m, why in answers.items() if why is not None}
        if refused:
            summary = "; ".join(f"{m}: {why}" if m else why for m, why in sorted(refused.items()))
            if summary != self._failsafe_refused:
                self.events.emit(
                    "group_failsafe_refused",
                    "critical",
                    f"group {self.group}: lease store unreachable and failsafe mode cannot "
                    f"keep {self.member} primary ({summary}); it steps down in "
                    f"{max(0.0, self.valid_until - clock.now()):.1f}s unless a renewal succeeds",
                    service=self.cfg.service,
                    evidence={"group": self.group, "refused": refused},
                )
            self._failsafe_refused = summary
            return
        if clock.now() >= self.valid_until:
            return  # the round ended past the deadline: the fencing process may have fenced
        self._failsafe_refused = None
        self.valid_until = max(self.valid_until, started + self.cfg.ttl - self.safety)
        if self.fencing is not None:
            self.fencing.hold(self.valid_until, started + self.cfg.ttl)
        self.metrics.failsafe.labels(self.group).set(1.0)
        if self.failsafe_since is None:
            self.failsafe_since = clock.now()
            others = sorted(m for m in topology or {} if m != self.member)
            self.events.emit(
                "group_failsafe_active",
                "critical",
                f"group {self.group}: lease store unreachable; {self.member} stays primary in "
                "failsafe mode: every other member acknowledged it ("
                + (", ".join(others) or "none in the group")
                + ")",
                service=self.cfg.service,
                evidence={"group": self.group, "members": others, "error": self.store_error},
            )

    async def _take_back(self, started: float) -> bool:
        """Back in touch after failsafe mode, this primary's lease had run out: take the key
        again (every member promised not to) while its own deadline still holds. False when
        that deadline has passed or another acquisition holds the key: it steps down."""
        if clock.now() >= self.valid_until:
            return False
        try:
            lease = await self.store.acquire(self.group, self.member, self.cfg.ttl)
        except LeaseStoreError as exc:
            self._store_failed(exc)
            return True  # still valid until the deadline; the next round and renewal go on
        if lease is not None and clock.now() >= self.valid_until:
            with contextlib.suppress(LeaseStoreError):  # taken past the deadline: give it up
                await self.store.release(lease)
            return False
        if lease is None:
            return False
        self._store_ok()
        old, self.lease = self.lease, lease
        self.valid_until = started + self.cfg.ttl - self.safety
        if self.fencing is not None:
            self.fencing.hold(self.valid_until, started + self.cfg.ttl)
        was = old.token if old else None
        how = (
            f"the lease store answers again; the lease had run out and was taken again "
            f"(token {was} -> {lease.token}; the service keeps the token its promote hook got)"
        )
        self._failsafe_ended(how)
        entry = Handover(
            group=self.group,
            at=time.time(),
            from_member=self.member,
            to_member=self.member,
            token=lease.token,
            kind="failsafe",
            reason=how,
            actor=ACTOR,
            steps={},
        )
        self.last_handover = entry
        try:
            # As after any acquisition: an older release must not vouch for this key.
            await self.store.set_flag(self.group, "released", None)
            await self.store.add_history(entry)
        except LeaseStoreError as exc:
            self._store_failed(exc)
        return True

    def _failsafe_ended(self, how: str) -> None:
        assert self.failsafe_since is not None
        lasted = clock.now() - self.failsafe_since
        self.failsafe_since, self._failsafe_refused = None, None
        self.metrics.failsafe.labels(self.group).set(0.0)
        self.events.emit(
            "group_failsafe_ended",
            "info",
            f"group {self.group}: {self.member} leaves failsafe mode after {lasted:.1f}s: {how}",
            service=self.cfg.service,
            evidence={"group": self.group, "lasted": round(lasted, 3)},
        )

    async def _standby_step(self) -> None:
        if self.role is Role.DEMOTING:
            return
        if self.cfg.lag is not None:
            await self._measure_lag()
        try:
            await self._read_group()
            seen_at = clock.now()
            leader = await self.store.leader(self.group)
        except LeaseStoreError as exc:
            self._store_failed(exc)
            return
        self._store_ok()
        self.known_leader = leader
        if leader is not None:
            self._leader_gone_at, self.free_at = None, None
            self.last_holder = leader.member
            self._seen = (leader, seen_at)
            self._follow(leader)
            if self.cfg.haproxy and leader.member != self.member:
                try:
                    await self._back_in_routing()
                except LeaseStoreError as exc:
                    self._store_failed(exc)
            return
        if self._leader_gone_at is None:
            self._leader_gone_at = clock.now()
        try:
            if not await self._certainly_free():
                return
        except LeaseStoreError as exc:
            self._store_failed(exc)
            return
        req = self.request
        forced = req is not None and req.kind == "failover" and req.to == self.member
        if self.paused and not forced:
            return
        if self._following is not None:
            return  # never promoted mid-rewind, not even when forced: once it has ended
        h = self.health()
        if not forced:
            if self._ineligible(h):
                return
            if (
                req is not None
                and self.fresh(req)
                and (req.to not in (None, self.member) or req.from_member == self.member)
            ):
                return  # an operator asked for someone else, or asked us to step down
        candidates = self._candidates()
        targeted = req is not None and req.to == self.member
        rank = (
            0
            if targeted
            else next(
                (i for i, m in enumerate(candidates) if m.member == self.member), len(candidates)
            )
        )
        if rank:
            # The better ranked go first; each rank waits a little longer, then checks again.
            await asyncio.sleep(rank * min(0.25, self.cfg.loop_wait / 2))
            try:
                if await self.store.leader(self.group) is not None:
                    return
            except LeaseStoreError as exc:
                self._store_failed(exc)
                return
        if self._failsafe_gate(forced) is not None:
            return  # a promise binds a forced one too; nothing is awaited before the flag
        started = clock.now()
        self._acquiring = True
        try:
            lease = await self.store.acquire(self.group, self.member, self.cfg.ttl)
        except LeaseStoreError as exc:
            self._store_failed(exc)
            return
        finally:
            self._acquiring = False
        if lease is None:
            return  # another standby won the race
        self.lease, self.role = lease, Role.PROMOTING
        self.valid_until = started + self.cfg.ttl - self.safety
        waited = (self.free_at[0] if self.free_at else started) - (self._leader_gone_at or started)
        self._acquired = {
            "detect": round(started - (self._leader_gone_at or started) - max(0.0, waited), 3),
            "wait": round(max(0.0, waited), 3),
            "acquire": round(clock.now() - started, 3),
        }
        self._promote_started = clock.now()
        asked = req if req is not None and (forced or targeted) else None
        self._promotion = {
            "kind": asked.kind if asked else "failover",
            "reason": (asked.reason if asked else "") or "no primary holds the lease",
            "actor": asked.actor if asked else ACTOR,
            "candidates": [
                {"member": m.member, "lag": m.lag, "priority": m.priority, "note": m.note}
                for m in self.members
            ],
            "rank": rank,
            "lag": self.lag,
            "from": self.last_holder,
        }
        old = self.last_holder
        if self.cfg.haproxy and old is not None and old != self.member:
            routed = clock.now()
            self._promotion["routing_fence"] = await routing_fence.take_out(self.cfg.haproxy, old)
            self._acquired["route"] = round(clock.now() - routed, 3)
            try:
                await self.store.set_flag(self.group, routing_fence.flag(old), str(lease.token))
            except LeaseStoreError as exc:
                self._store_failed(exc)
        try:
            # An old holder's release must not vouch for this key if it vanishes: the
            # flag goes before the promote hook runs (lease.certainly_free).
            await self.store.set_flag(self.group, "released", None)
        except LeaseStoreError as exc:
            self._store_failed(exc)
            await self._demote("not promoted: the released flag could not be cleared", {}, True)
            return
        if self.fencing is not None:
            error = await self.fencing.arm(self.valid_until, started + self.cfg.ttl)
            if error is not None and self.cfg.watchdog is not None:
                await self._demote(f"not promoted: {error}", {"fencing": error}, release=True)
                return
            if error is not None:
                self.events.emit(
                    "group_fencing_unavailable",
                    "critical",
                    f"group {self.group}: promoting {self.member} without its fencing "
                    f"process ({error}): a frozen or killed agent would not fence its service",
                    service=self.cfg.service,
                    evidence={"group": self.group, "error": error},
                )
        env = {"HADECK_FENCING_TOKEN": str(lease.token)}
        self._hook = asyncio.create_task(self._run_hook("promote", self.cfg.hooks.promote, env))
        # Routable as soon as the hook succeeds, not at the next tick.
        self._hook.add_done_callback(lambda _: self._wake.set())
        self._wake.set()

    def _follow(self, leader: Leader) -> None:
        """A standby replicates from the primary it sees: the follow hook runs once per new
        lease (another member, or a newer token), one at a time, in a task (a pg_rewind
        takes a while and the loop goes on), again with backoff if it fails. At once, not
        once the holder says it is primary: the key is taken before its promote hook
        runs, and the hook decides how to wait for that (hadeck-pg polls until the new
        primary is writable); with synchronous replication, writes resume only once a
        standby streams from the new primary."""
        if self.cfg.hooks.follow is None or leader.member == self.member:
            return
        target = (leader.member, leader.token)
        if self._following is not None or self._followed == target:
            return
        if clock.now() < self._follow_retry_at:
            return
        self._following = asyncio.create_task(self._run_follow(leader), name=f"follow:{self.group}")
        self._following.add_done_callback(lambda _: self._wake.set())

    async def _run_follow(self, leader: Leader) -> None:
        assert self.cfg.hooks.follow is not None
        try:
            address = next((m.address for m in self.members if m.member == leader.member), None)
            env = {
                "HADECK_PRIMARY": leader.member,
                "HADECK_PRIMARY_ADDRESS": address or "",
                "HADECK_FENCING_TOKEN": str(leader.token),
            }
            started = clock.now()
            result = await self._run_hook("follow", self.cfg.hooks.follow, env)
            duration = clock.now() - started
            if result.ok:
                self._followed, self._follow_failures = (leader.member, leader.token), 0
            else:
                self._follow_failures += 1
                backoff = min(60.0, self.cfg.loop_wait * 2**self._follow_failures)
                self._follow_retry_at = clock.now() + backoff
            self._journal(
                "group_follow",
                ACTOR,
                {"primary": leader.member, "token": leader.token},
                result.ok,
                time.time() - duration,
                duration,
                {"follow": _outcome(result)},
                Event(
                    "group_following" if result.ok else "group_follow_failed",
                    "info" if result.ok else "warning",
                    f"group {self.group}: {self.member} follows {leader.member} "
                    f"(token {leader.token})"
                    if result.ok
                    else f"group {self.group}: {self.member} could not follow "
                    f"{leader.member} (attempt {self._follow_failures}, again in "
                    f"{self._follow_retry_at - clock.now():.0f}s): {result.summary()}",
                    service=self.cfg.service,
                    evidence={
                        "group": self.group,
                        "primary": leader.member,
                        "token": leader.token,
                        "follow": _outcome(result),
                    },
                ),
            )
        finally:
            self._following = None

    async def _back_in_routing(self) -> None:
        """Fenced out of HAProxy by the member that took over: back in once this member's
        demote hook has succeeded (routing_fence.py). In a task: HAProxy's check takes a
        moment, and the loop goes on."""
        if not self._stood_down or (self._routing is not None and not self._routing.done()):
            return
        if await self.store.get_flag(self.group, routing_fence.flag(self.member)) is None:
            return
        self._routing = asyncio.create_task(self._put_back(), name=f"routing:{self.group}")

    async def _put_back(self, primary: bool = False) -> None:
        if primary:
            try:
                if await self.store.get_flag(self.group, routing_fence.flag(self.member)) is None:
                    return
            except LeaseStoreError as exc:
                self._store_failed(exc)
                return
        results = await routing_fence.put_back(self.cfg.haproxy, self.member, primary)
        ok = all(r["ok"] for r in results)
        if ok:
            try:
                await self.store.set_flag(self.group, routing_fence.flag(self.member), None)
            except LeaseStoreError as exc:
                self._store_failed(exc)
                return
        self.events.emit(
            "group_routing_restored" if ok else "group_routing_not_restored",
            "info" if ok else "warning",
            f"group {self.group}: {self.member} is back in HAProxy's rotation"
            + (" as the primary" if primary else " as a standby")
            if ok
            else f"group {self.group}: {self.member} could not be put back in HAProxy: "
            + "; ".join(r.get("error", "") for r in results if not r["ok"]),
            service=self.cfg.service,
            evidence={"group": self.group, "haproxy": results},
        )

    async def _certainly_free(self) -> bool:
        """True once no old holder can still believe it is primary (see certainly_free);
        until then, says once what it waits for and why."""
        gone_at = self._leader_gone_at
        assert gone_at is not None
        if self.free_at is None:
            released = Release.parse(await self.store.get_flag(self.group, "released"))
            seen = self._seen
            if seen is None:
                # Nothing seen since this agent started: the newest handover says whose
                # the key was, and the start is the last moment it could have been seen.
                last = await self.store.history(self.group, 1)
                if not last:
                    self.free_at = (gone_at, "the group has never had a primary")
                else:
                    h = last[0]
                    seen = (Leader(self.group, h.to_member, h.token, None), self._started)
            if seen is not None:
                self.free_at = certainly_free(
                    *seen,
                    gone_at=gone_at,
                    released=released,
                    ttl=self.cfg.ttl,
                    safety=self.safety,
                    resolution=self.store.ttl_resolution,
                )
                holder, _ = seen
                wait = self.free_at[0] - clock.now()
                if wait > 0:
                    self.events.emit(
                        "group_lease_vanished",
                        "warning",
                        f"group {self.group}: no leader key; {self.free_at[1]}: "
                        f"{self.member} waits {wait:.1f}s",
                        service=self.cfg.service,
                        evidence={
                            "group": self.group,
                            "holder": holder.member,
                            "token": holder.token,
                            "ttl_left": holder.ttl_left,
                            "wait": round(wait, 3),
                        },
                    )
        return self.free_at is not None and clock.now() >= self.free_at[0]

    def fresh(self, req: Request) -> bool:
        """Not lapsed: a request not done within 3 x ttl is ignored by every member."""
        return time.time() - req.at < 3 * self.cfg.ttl

    def _candidates(self) -> list[MemberRecord]:
        return ranked(self.members)

    async def _promotion_progress(self) -> None:
        if self._hook is None:  # the promotion's setup failed before its hook started
            await self._demote("the promotion could not be started", {}, release=True)
            return
        if not self._hook.done():
            return
        result = self._hook.result()
        self._hook = None
        lease = self.lease
        assert lease is not None
        if not result.ok:
            await self._demote(
                f"the promote hook failed: {result.summary()}",
                {"promote": _outcome(result)},
                release=True,
            )
            return
        self.role = Role.PRIMARY
        self.last_holder = self.member
        if self.cfg.haproxy:
            # Fenced out of HAProxy earlier and not put back yet: the primary must be in.
            if self._routing is not None:
                self._routing.cancel()  # a standby's put-back would wait for DOWN in vain
            self._routing = asyncio.create_task(self._put_back(primary=True))
        p = self._promotion
        self.metrics.promotions.labels(self.group, p["kind"]).inc()
        steps = {**self._acquired, "promote": round(clock.now() - self._promote_started, 3)}
        entry = Handover(
            group=self.group,
            at=time.time(),
            from_member=p["from"],
            to_member=self.member,
            token=lease.token,
            kind=p["kind"],
            reason=p["reason"],
            actor=p["actor"],
            steps=steps,
        )
        self.last_handover = entry
        try:
            await self.store.add_history(entry)
            if self.request is not None and self.request.to in (None, self.member):
                await self.store.set_flag(self.group, "request", None)
        except LeaseStoreError as exc:
            self._store_failed(exc)
        self._journal(
            "group_promote",
            p["actor"],
            {"kind": p["kind"], "reason": p["reason"], "token": lease.token},
            True,
            time.time() - sum(steps.values()),
            sum(steps.values()),
            {"steps": steps, "promote": _outcome(result)},
            Event(
                "group_promoted",
                "warning",
                f"group {self.group}: {self.member} is primary (token {lease.token}, "
                f"{p['kind']}, from {p['from'] or 'none'}): {p['reason']}",
                service=self.cfg.service,
                evidence={"group": self.group, "token": lease.token, "steps": steps, **p},
            ),
        )

    async def _demote(self, reason: str, evidence: dict[str, Any], release: bool) -> None:
        """Stop being primary: unroutable at once, demote hook, then (if we can) release."""
        was = self.role
        self.role = Role.DEMOTING
        self._fenced_out = None
        self.valid_until = 0.0
        self.failsafe_since, self._failsafe_refused = None, None
        self.metrics.failsafe.labels(self.group).set(0.0)
        if self._hook is not None:
            self._hook.cancel()
            try:
                await self._hook
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # this task is being stopped: not the hook's cancel to swallow
            except Exception as exc:  # its failure is moot: this member is stepping down
                log.info("group %s: promote hook ended with %r", self.group, exc)
            self._hook = None
        started = clock.now()
        result = await self._run_hook("demote", self.cfg.hooks.demote, {})
        self._stood_down = result.ok
        fenced = None
        if not result.ok and self.cfg.hooks.fence is not None:
            fenced = await self._run_hook("fence", self.cfg.hooks.fence, {})
        released = False
        # Only a member that has certainly stopped serving hands its key over early; one
        # whose demote and fence both failed lets the lease run out instead.
        stopped = result.ok or (fenced is not None and fenced.ok)
        if release and stopped and self.lease is not None:
            try:
                note = Release(self.lease.token, self.member, time.time())
                await self.store.set_flag(self.group, "released", note.to_json())
                released = await self.store.release(self.lease)
            except LeaseStoreError as exc:
                self._store_failed(exc)
        if stopped and self.fencing is not None:
            self.fencing.down()
        token = self.lease.token if self.lease else None
        if self.lease is not None:
            # This member's own key: it knows its deadline is over, whatever the store says.
            self._seen = (Leader(self.group, self.member, self.lease.token, 0.0), started)
        self.lease, self.role = None, Role.STANDBY
        self._leader_gone_at, self.free_at = None, None
        steps = {"demote": round(clock.now() - started, 3)}
        self._journal(
            "group_demote",
            ACTOR,
            {"reason": reason, "token": token},
            result.ok,
            time.time() - steps["demote"],
            steps["demote"],
            {"released": released, "steps": steps},
            Event(
                "group_demoted",
                "critical" if not result.ok else "warning",
                f"group {self.group}: {self.member} stepped down ({reason})"
                + ("; lease released" if released else "")
                + ("" if result.ok else f"; demote hook failed: {result.summary()}"),
                service=self.cfg.service,
                evidence={
                    "group": self.group,
                    "reason": reason,
                    "was": was.value,
                    "token": token,
                    "released": released,
                    "steps": steps,
                    "demote": _outcome(result),
                    "fence": _outcome(fenced) if fenced else None,
                    **evidence,
                },
            ),
        )

    def _journal_left_reports(self) -> None:
        """Fences run after the previous agent died: audited now, by this one."""
        taken = self.fence_reports.with_suffix(".reading")
        try:  # moved first: a report written meanwhile starts a new file
            os.replace(self.fence_reports, taken)
            lines = taken.read_text().splitlines()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error("group %s: cannot read %s: %s", self.group, self.fence_reports, exc)
            return
        for line in lines:
            try:
                report = json.loads(line)
            except ValueError:
                continue
            if isinstance(report, dict):
                self._fenced(report)
        with contextlib.suppress(OSError):
            taken.unlink()

    def _fenced(self, report: dict[str, Any]) -> None:
        """What the fencing process did without the agent: audited like any action."""
        outcome = report.get("fenced")
        if not isinstance(outcome, dict):
            self.events.emit(
                "group_fencing_problem",
                "critical",
                f"group {self.group}: fencing process: {report}",
                service=self.cfg.service,
                evidence={"group": self.group, **report},
            )
            return
        ok = bool(outcome.get("ok"))
        why = "the agent is gone" if outcome.get("agent_gone") else "no renewal reached it"
        if self.role in (Role.PRIMARY, Role.PROMOTING):
            # Fenced while this agent still counts itself primary (a renewal that came back
            # late): its service is no primary any more, so neither is the member. The
            # loop steps down at once (_primary_step).
            self._fenced_out = why
            self._wake.set()
        self._journal(
            "group_fence",
            ACTOR,
            {"reason": f"lease deadline passed: {why}"},
            ok,
            time.time() - float(outcome.get("duration") or 0.0),
            float(outcome.get("duration") or 0.0),
            outcome,
            Event(
                "group_fenced",
                "critical",
                f"group {self.group}: {self.member}'s fencing process ran the fence at the "
                f"lease deadline ({why}): "
                + ("done" if ok else f"FAILED {outcome.get('error') or outcome}"),
                service=self.cfg.service,
                evidence={"group": self.group, **outcome},
            ),
        )

    async def _run_hook(
        self, name: str, step: CommandStep, env: dict[str, str]
    ) -> commands.CommandResult:
        full = {
            "HADECK_GROUP": self.group,
            "HADECK_MEMBER": self.member,
            "HADECK_ROLE": {"promote": "primary"}.get(name, "standby"),
            **env,
        }
        result = await commands.run(step.command, step.timeout, env=full)
        if not result.ok:
            log.warning("group %s: %s hook: %s", self.group, name, result.summary())
        return result

    async def _measure_lag(self) -> None:
        assert self.cfg.lag is not None
        result = await commands.run(self.cfg.lag.command, self.cfg.lag.timeout)
        if not result.ok:
            self.lag, self.lag_error = None, f"lag command: {result.summary()}"
            return
        try:
            self.lag, self.lag_error = parse_lag(result.stdout), None
        except ValueError as exc:
            self.lag, self.lag_error = None, f"lag command: {exc}"


def parse_lag(stdout: str) -> float:
    """The lag a lag command printed: the first word of its stdout, a finite number >= 0.

    Only stdout: a warning on stderr (psql's, say) is not a lag. NaN, infinities and
    negative numbers are refused, since a standby's rank is sorted on this number and a
    NaN or -inf would put the most behind standby first."""
    words = stdout.split()
    if not words:
        raise ValueError("printed nothing on stdout")
    try:
        lag = float(words[0])
    except ValueError:
        raise ValueError(f"printed {stdout[:40]!r}, not a number") from None
    if not math.isfinite(lag) or lag < 0:
        raise ValueError(f"printed {words[0][:40]!r}, not a finite number >= 0")
    return lag


def _outcome(result: commands.CommandResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "argv": list(result.argv),
        "exit_code": result.exit_code,
        "timed_out": result.timed_out,
        "duration": round(result.duration, 3),
        "output": result.output[-500:],
    }
