"""The recovery ladder of one service: act, verify, back off, and give up without a dead end.

When the service goes down an episode starts: attempt 1 runs at once (detection
to action is one event-loop turn), later attempts wait an exponential backoff.
Each attempt runs the ladder's step for it, then waits `verify_window` for the
service's probes to come back up. The episode is held, not failed, while a
service it depends on is down or one of its probes flaps. When the attempt
budget is spent the ladder is `gave_up` (a critical event) until the service
comes back by any means, or the window frees an attempt: never a state that
needs a manual reset. An episode lasts as long as the service is down: a store
or an audit log that cannot write (a full disk) costs the history a row, never
the episode (the journal keeps the audit record and writes it later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent.commands import CommandResult
from agent.config import RecoveryPolicy
from agent.events import EventLog, Throttled
from agent.journal import Event, Journal
from agent.recovery.attempts import RecoveryAttempts
from agent.recovery.budget import AttemptBudget, backoff_delay, step_for
from agent.schema import RecoveryAttempt, RecoveryStatus
from agent.supervision_metrics import RECOVERY_STATES, SupervisionMetrics

AUTOMATIC_ACTOR = "hadeck-agent"

log = logging.getLogger("hadeck.recovery")
_store_failed = Throttled(log)


@dataclass(frozen=True)
class ServiceView:
    """What the ladder needs to know of its service, asked fresh each time."""

    is_up: Callable[[], bool]
    blockers: Callable[[], list[str]]  # reasons recovery must wait (dependency down, flapping)
    run_step: Callable[[str], Awaitable[list[CommandResult]]]


class RecoveryLadder:
    def __init__(
        self,
        service: str,
        policy: RecoveryPolicy,
        view: ServiceView,
        events: EventLog,
        attempts: RecoveryAttempts,
        metrics: SupervisionMetrics,
        journal: Journal,
        gave_up_announced: bool = False,
    ) -> None:
        self.service, self.policy, self.view = service, policy, view
        #: A give-up event is out and the service has not come back since; survives a reload.
        self.gave_up_announced = gave_up_announced
        self.events, self.attempts, self.metrics, self.journal = events, attempts, metrics, journal
        since = time.time() - policy.window
        self.budget = AttemptBudget.of(policy, (a.ts for a in attempts.of(service, since, 1000)))
        self.state, self.reason = "idle", ""
        self.next_attempt_at: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._publish()

    # -- inputs -------------------------------------------------------------

    def service_down(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._episode(), name=f"recovery:{self.service}")
        self.poke()

    def poke(self) -> None:
        """Something this ladder may be waiting on changed (its service, a dependency, flapping)."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- the episode --------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        """Wait up to `seconds`, returning early when poked."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, seconds))

    def _set(self, state: str, reason: str, next_at: float | None = None) -> None:
        self.state, self.reason, self.next_attempt_at = state, reason, next_at
        self._publish()

    async def _episode(self) -> None:
        attempt = 0
        # The last hold/give-up already raised as an event (by this ladder, or before a reload).
        announced: str | None = "gave_up" if self.gave_up_announced else None
        try:
            while not self.view.is_up():
                try:
                    attempt, announced = await self._step(attempt, announced)
                except Exception as exc:  # a bug here must not leave the service unattended
                    log.exception("recovery of %s: unexpected error, going on", self.service)
                    self._set("backoff", f"unexpected error: {type(exc).__name__}: {exc}")
                    await self._sleep(max(1.0, backoff_delay(self.policy, attempt + 1)))
            self.gave_up_announced = False  # it is back: a later give-up is news again
        finally:
            self._set("idle", "")

    async def _step(self, attempt: int, announced: str | None) -> tuple[int, str | None]:
        """One turn of the episode: hold, give up, wait out a backoff or make an attempt."""
        now = time.time()
        if blockers := self.view.blockers():
            reason = "; ".join(blockers)
            self._set("held", reason)
            if announced != reason:
                announced = reason
                self.events.emit(
                    "recovery_held",
                    "warning",
                    f"recovery of {self.service} is held: {reason}",
                    service=self.service,
                    evidence={"blockers": blockers},
                )
            await self._sleep(60.0)
            return attempt, announced
        if not self.budget.allows(now):
            frees = self.budget.frees_at(now)
            self._set(
                "gave_up",
                f"{self.policy.max_attempts} attempts within "
                f"{self.policy.window:g}s did not bring it back",
                frees,
            )
            if announced != "gave_up":
                announced = "gave_up"
                await self._gave_up(frees)
            await self._sleep(frees - time.time())
            return 0, announced
        attempt += 1
        delay = backoff_delay(self.policy, attempt)
        if delay > 0:
            self._set("backoff", f"attempt {attempt} in {delay:g}s", now + delay)
            deadline = now + delay
            while not self.view.is_up() and (left := deadline - time.time()) > 0:
                await self._sleep(left)
            if self.view.is_up() or self.view.blockers():
                return attempt - 1, None
        await self._attempt(attempt)
        return attempt, None

    async def _attempt(self, attempt: int) -> None:
        step = step_for(self.policy, attempt)
        started, t0 = time.time(), time.monotonic()
        self.budget.record(started)
        self._set("recovering", f"attempt {attempt}: {step}")
        try:
            attempt_id: int | None = self.attempts.add(
                self.service, started, step, "running", "", 0.0
            )
        except sqlite3.Error as exc:  # the history misses it; the attempt goes on
            _store_failed(logging.WARNING, "recovery: attempt not stored: %s", exc)
            attempt_id = None
        self.events.emit(
            "recovery_started",
            "warning",
            f"recovering {self.service}: attempt {attempt} of {self.policy.max_attempts}, "
            f"step {step}",
            service=self.service,
            evidence={"attempt": attempt, "step": step},
        )
        results = await self.view.run_step(step)
        if all(r.ok for r in results):
            self._set(
                "verifying",
                f"attempt {attempt}: waiting for probes to pass",
                time.time() + self.policy.verify_window,
            )
            deadline = time.time() + self.policy.verify_window
            while not self.view.is_up() and (left := deadline - time.time()) > 0:
                await self._sleep(left)
            recovered = self.view.is_up()
            detail = (
                "probes passed"
                if recovered
                else f"probes still failing after {self.policy.verify_window:g}s"
            )
        else:
            recovered, detail = False, f"step {step} failed: {results[-1].summary()}"
        duration = time.monotonic() - t0
        result = "recovered" if recovered else "failed"
        if attempt_id is not None:
            try:
                self.attempts.finish(attempt_id, result, detail, duration)
            except sqlite3.Error as exc:
                _store_failed(logging.WARNING, "recovery: attempt result not stored: %s", exc)
        self.metrics.recovery_attempts.labels(self.service, step, result).inc()
        await self.journal.finished(
            AUTOMATIC_ACTOR,
            "recovery",
            self.service,
            {"attempt": attempt, "step": step},
            ok=recovered,
            message=detail,
            started=started,
            duration=duration,
            result={
                "detail": detail,
                "duration_seconds": round(duration, 3),
                "commands": [{"argv": list(r.argv), "outcome": r.summary()} for r in results],
            },
            event=Event(
                f"recovery_{result}",
                "info" if recovered else "warning",
                f"{self.service} {'recovered' if recovered else 'not recovered'} by {step} "
                f"(attempt {attempt}): {detail}",
                service=self.service,
                evidence={
                    "attempt": attempt,
                    "step": step,
                    "duration_seconds": round(duration, 3),
                    "commands": [
                        {
                            "argv": list(r.argv),
                            "exit_code": r.exit_code,
                            "timed_out": r.timed_out,
                            "output": r.output[-2000:],
                        }
                        for r in results
                    ],
                },
            ),
        )

    async def _gave_up(self, frees: float) -> None:
        self.gave_up_announced = True
        message = (
            f"gave up recovering {self.service}: {self.policy.max_attempts} attempts within "
            f"{self.policy.window:g}s failed; next try when it comes back or in "
            f"{max(0.0, frees - time.time()):.0f}s"
        )
        await self.journal.finished(
            AUTOMATIC_ACTOR,
            "recovery_gave_up",
            self.service,
            {"max_attempts": self.policy.max_attempts, "window_seconds": self.policy.window},
            ok=False,
            message=message,
            started=time.time(),
            duration=0.0,
            result={"retry_at": round(frees, 3)},
            event=Event(
                "recovery_gave_up",
                "critical",
                message,
                service=self.service,
                evidence={
                    "attempts": [a.model_dump() for a in self.history(self.policy.max_attempts)]
                },
            ),
        )

    # -- outputs ------------------------------------------------------------

    def _publish(self) -> None:
        self.metrics.set_enum(
            self.metrics.recovery_state, (self.service,), self.state, RECOVERY_STATES
        )

    def history(self, limit: int = 10) -> list[RecoveryAttempt]:
        return [
            RecoveryAttempt(
                ts=a.ts,
                step=a.step,
                result=a.result,
                detail=a.detail,
                duration_seconds=round(a.duration, 3),
            )
            for a in self.attempts.of(self.service, limit=limit)
        ]

    def status(self) -> RecoveryStatus:
        now = time.time()
        return RecoveryStatus(
            state=self.state,
            reason=self.reason,
            attempts_in_window=self.budget.used(now),
            max_attempts=self.policy.max_attempts,
            window_seconds=self.policy.window,
            next_attempt_at=self.next_attempt_at,
            steps=list(self.policy.steps),
            history=self.history(),
        )
