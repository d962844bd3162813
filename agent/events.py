"""The one path every event takes: store, metrics, log. Subsystems call `emit`, nothing else.

`emit` never raises into its caller. An event is raised in the middle of the
flow probe -> detector -> service state -> recovery / failover, and a store that
cannot write (disk full, database locked) must not cut that flow short: the
event is still counted and logged, and kept in memory (up to MAX_PENDING
events, oldest first) to be written, in order, once the store takes writes
again, at the next event or on a retry timer. Events beyond that bound are
lost from the store but not from the log, which has every event; a summary
event says how many when the store is back. Events still in memory when the
agent stops are lost from the store the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from agent.metrics import Metrics
from agent.store import Store

log = logging.getLogger("hadeck.events")

_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}

MAX_PENDING = 256
RETRY_FIRST, RETRY_MAX = 0.5, 10.0


class Throttled:
    """One logger line per `every` seconds for a failure that can repeat many times a
    second (a full disk under a storm of writes), saying how many it did not log."""

    def __init__(self, logger: logging.Logger, every: float = 60.0) -> None:
        self.logger, self.every = logger, every
        self._last = -every
        self._quiet = 0

    def __call__(self, level: int, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            self._quiet += 1
            return
        if self._quiet:
            message += f" ({self._quiet} more like this in the last {now - self._last:.0f}s)"
        self._last, self._quiet = now, 0
        self.logger.log(level, message, *args)


@dataclass(frozen=True)
class _Event:
    ts: float
    kind: str
    severity: str
    message: str
    service: str | None
    probe: str | None
    evidence: dict[str, Any] = field(default_factory=dict)


class EventLog:
    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self._pending: deque[_Event] = deque()
        self._lost = 0
        self._error = ""
        self._retry: asyncio.TimerHandle | None = None
        self._delay = RETRY_FIRST
        self._complain = Throttled(log)

    def emit(
        self,
        kind: str,
        severity: str,
        message: str,
        *,
        service: str | None = None,
        probe: str | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> None:
        event = _Event(time.time(), kind, severity, message, service, probe, evidence or {})
        self.metrics.events.labels(kind, severity).inc()
        log.log(_LEVEL.get(severity, logging.WARNING), "%s: %s", kind, message)
        if len(self._pending) < MAX_PENDING:
            self._pending.append(event)
        else:
            self._lost += 1
        if not self._flush():
            self.metrics.event_write_failures.inc()
            self._complain(
                logging.WARNING,
                "events: cannot write to the store (%s); %d kept in memory, written when it "
                "takes writes again",
                self._error,
                len(self._pending),
            )
            self._arm_retry()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _flush(self) -> bool:
        """Write the kept events in order, in one transaction (one append to SQLite's WAL
        however many there are: a nearly full disk may hold one and not fifty); False when
        the store still refuses."""
        db = self.store.db
        while self._pending:
            batch, done = list(self._pending), 0
            try:
                with db:
                    db.execute("BEGIN")
                    for e in batch:
                        self.store.add_event(
                            e.ts, e.kind, e.severity, e.message, e.service, e.probe, e.evidence
                        )
                        done += 1
            except sqlite3.Error as exc:
                self._error = str(exc)
                if db.in_transaction:  # a COMMIT that failed can leave it open
                    with contextlib.suppress(sqlite3.Error):
                        db.rollback()
                return False
            except Exception:  # an event that can never be written must not block the others
                log.exception("events: dropped %s, it cannot be stored", batch[done].kind)
                del self._pending[done]
                continue
            for _ in batch:
                self._pending.popleft()
            if self._lost:
                self._pending.append(self._loss())
        self._delay = RETRY_FIRST
        return True

    def _loss(self) -> _Event:
        lost, self._lost = self._lost, 0
        message = (
            f"{lost} events could not be kept while the store refused writes "
            f"({self._error}); the agent's log has every event"
        )
        self.metrics.events.labels("events_lost", "warning").inc()
        log.warning("events_lost: %s", message)
        return _Event(time.time(), "events_lost", "warning", message, None, None, {"count": lost})

    def _arm_retry(self) -> None:
        if self._retry is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a command-line use): the next emit retries
            return
        self._retry = loop.call_later(self._delay, self._retry_now)
        self._delay = min(self._delay * 2, RETRY_MAX)

    def _retry_now(self) -> None:
        self._retry = None
        if not self._flush():
            self._arm_retry()
