"""The one place an action is recorded: audit record, actions row, metric and event.

Every action the agent refuses or finishes, asked by an operator (restart, a
group switchover) or taken by itself (a recovery attempt, a give-up), is
written the same way, so none is missing from `hadeck_actions_total`, the
actions table or the audit log, and later capabilities (backups, restores,
releases) get the same for free, with the id of their long-running operation
in the audit record's params and in the event's evidence.

The audit record is written and fsync'd on a thread of the journal's own, never
on the event loop, and the caller waits for it (up to `wait` seconds): an
operator's answer says the record is on disk, or says plainly that it is not
and why. A record the disk does not take (full, failing) is not an error for
the action: the audit log keeps it in memory, in order, the journal retries it
with backoff for as long as the agent runs, raises `audit_write_failed` once
and `audit_write_resumed` when the records are on disk, and the action's
result and event carry the reason. A recovery episode therefore goes on
through a full disk instead of ending half-way.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from agent.audit import AuditLog
from agent.events import EventLog, Throttled
from agent.metrics import Metrics
from agent.store import Store

log = logging.getLogger("hadeck.journal")

#: How long an action waits for its audit record to be on disk before answering without.
AUDIT_WAIT = 10.0
RETRY_FIRST, RETRY_MAX = 0.5, 10.0


@dataclass(frozen=True)
class Event:
    """The event an action raises when it finishes (kinds and messages are its own)."""

    kind: str
    severity: str
    message: str
    service: str | None = None
    probe: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """What became of an action's audit record."""

    #: The record's place in the chain; None when it could not even be kept in memory.
    seq: int | None
    #: None when the record is on disk; else why it is not (yet).
    error: str | None

    def note(self) -> str:
        """For the action's answer: empty when the record is on disk."""
        if self.error is None:
            return ""
        if self.seq is None:
            return f"its audit record was not kept ({self.error})"
        return (
            f"audit record {self.seq} is not on disk yet ({self.error}); the agent keeps it "
            "in memory and writes it when the disk takes writes again"
        )


class _Writer:
    """One daemon thread that writes the audit log's queue. One thread: records reach the
    disk in the order they were made, and a write hung in the kernel strands this thread
    only (a daemon thread: it does not keep the agent from exiting)."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self._work: queue.SimpleQueue[Future[None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def flush(self) -> Future[None]:
        done: Future[None] = Future()
        self._work.put(done)
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="hadeck-audit", daemon=True
                )
                self._thread.start()
        return done

    def _serve(self) -> None:
        while True:
            waiting = [self._work.get()]
            while True:  # one flush writes everything queued: it answers every caller
                try:
                    waiting.append(self._work.get_nowait())
                except queue.Empty:
                    break
            try:
                self.audit.flush()
            except BaseException as exc:
                for done in waiting:
                    done.set_exception(exc)
            else:
                for done in waiting:
                    done.set_result(None)
            del waiting


class Journal:
    def __init__(
        self,
        audit: AuditLog,
        store: Store,
        metrics: Metrics,
        events: EventLog,
        wait: float = AUDIT_WAIT,
    ) -> None:
        self.audit, self.store, self.metrics, self.events = audit, store, metrics, events
        self.wait = wait
        self._writer = _Writer(audit)
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # built outside the loop: learnt at the first action
            self._loop = None
        self._outage: tuple[float, int] | None = None  # since when, last seq on disk then
        self._retry: asyncio.Task[None] | None = None
        self._complain = Throttled(log)
        self._row_failed = Throttled(log)
        audit.on_failure = self._write_failed
        metrics.audit_pending.set_function(lambda: audit.pending)

    # -- what subsystems call -----------------------------------------------

    async def refused(
        self,
        actor: str,
        action: str,
        target: str,
        params: dict[str, Any],
        message: str,
        *,
        operation: str | None = None,
    ) -> Entry:
        """An action that did not run. No event: the refusal is the caller's answer."""
        entry = await self._audit(
            actor, action, target, params, {"ok": False, "refused": message}, operation
        )
        self._row(time.time(), actor, action, target, False, f"refused: {message}", 0.0)
        self.metrics.actions.labels(action, "refused").inc()
        return entry

    async def finished(
        self,
        actor: str,
        action: str,
        target: str,
        params: dict[str, Any],
        *,
        ok: bool,
        message: str,
        started: float,
        duration: float,
        result: dict[str, Any],
        event: Event,
        operation: str | None = None,
    ) -> Entry:
        """An action that ran: `result` goes into the audit record beside `ok`."""
        entry = await self._audit(actor, action, target, params, {"ok": ok, **result}, operation)
        self._row(started, actor, action, target, ok, message, duration)
        self.metrics.actions.labels(action, "ok" if ok else "failed").inc()
        evidence = {**event.evidence, "audit_seq": entry.seq}
        if operation is not None:
            evidence["operation"] = operation
        if entry.error is not None:
            evidence["audit_error"] = entry.error
        self.events.emit(
            event.kind,
            event.severity,
            event.message,
            service=event.service,
            probe=event.probe,
            evidence=evidence,
        )
        return entry

    # -- the parts -----------------------------------------------------------

    async def _audit(
        self,
        actor: str,
        action: str,
        target: str,
        params: dict[str, Any],
        result: dict[str, Any],
        operation: str | None,
    ) -> Entry:
        self._loop = asyncio.get_running_loop()
        if operation is not None:
            params = {**params, "operation": operation}
        record = self.audit.make(actor, action, target, params, result)
        if record is None:
            self._arm_retry()
            return Entry(
                None,
                f"{self.audit.pending} records already wait for the disk, as many as the agent "
                f"keeps ({self.audit.error}); this one is only in the agent's log",
            )
        await self._flush()
        if self.audit.written_seq >= record["seq"]:
            return Entry(record["seq"], None)
        return Entry(
            record["seq"],
            self.audit.error or f"the write did not return within {self.wait:g}s (a hung disk?)",
        )

    async def _flush(self) -> None:
        done = asyncio.wrap_future(self._writer.flush())
        done.add_done_callback(_retrieve)  # a bug in the writer is logged once, by asyncio
        await asyncio.wait({done}, timeout=self.wait)
        self._check_outage()

    def _row(
        self,
        ts: float,
        actor: str,
        action: str,
        target: str,
        ok: bool,
        detail: str,
        duration: float,
    ) -> None:
        try:
            self.store.add_action(ts, actor, action, target, ok, detail, duration)
        except sqlite3.Error as exc:  # the audit log is the record; the row is for queries
            self._row_failed(logging.WARNING, "journal: actions row not written: %s", exc)

    # -- a disk that refuses writes -------------------------------------------

    def _write_failed(self, exc: OSError) -> None:
        """Called by the audit log on the thread that tried to write."""
        self.metrics.audit_write_failures.inc()
        self._complain(
            logging.ERROR,
            "audit: %s; %d records wait in memory",
            self.audit.error or exc,
            self.audit.pending,
        )
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._check_outage)

    def _check_outage(self) -> None:
        """On the loop, after any write: tell when records start and stop waiting."""
        if self.audit.pending and self._outage is None:
            self._outage = (time.time(), self.audit.written_seq)
            self.events.emit(
                "audit_write_failed",
                "critical",
                f"audit records cannot be written: {self.audit.error}; the agent keeps them "
                "in memory, in order, and writes them when the disk takes writes again "
                "(actions and recovery go on)",
                evidence={"path": str(self.audit.path), "error": self.audit.error},
            )
        if self.audit.pending:
            self._arm_retry()
        elif self._outage is not None:
            since, seq = self._outage
            self._outage = None
            written = self.audit.written_seq - seq
            self.events.emit(
                "audit_write_resumed",
                "info",
                f"{written} audit records that waited up to {time.time() - since:.0f}s "
                f"are on disk in {self.audit.path}",
                evidence={"path": str(self.audit.path), "written": written},
            )

    def _arm_retry(self) -> None:
        if self._retry is None or self._retry.done():
            self._retry = asyncio.get_running_loop().create_task(
                self._retry_until_written(), name="audit-retry"
            )

    async def _retry_until_written(self) -> None:
        delay = RETRY_FIRST
        while self.audit.pending:
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
            await self._flush()


def _retrieve(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and (exc := done.exception()) is not None:
        log.error("audit: the writer failed: %r", exc)
