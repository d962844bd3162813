"""Long-running operations: actions that outlive the request that started them.

A group handover today, and next backups, restores, drills and activations,
answer `202` with an operation id at once; the work runs in a task of its own
and reports progress (a fraction, counts, an ETA where it can tell); the
operation can be cancelled; its record is in the store, so the list survives
an agent restart, and one that was running when the agent stopped or died is
marked `interrupted` at the next start, never left `running`. The id goes into
the operation's events and audit records (the work gets it as `op.id`).

States: running -> succeeded | failed | cancelled | interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent.events import EventLog
from agent.schema import Operation as OperationModel
from agent.schema import OperationProgress
from agent.store import Retention, Store, Table

log = logging.getLogger("hadeck.operations")

FINISHED = ("succeeded", "failed", "cancelled", "interrupted")

TABLE = Table(
    "operations",
    (
        """
CREATE TABLE operations (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    target TEXT NOT NULL,
    actor TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL,
    progress TEXT NOT NULL,
    result TEXT NOT NULL,
    error TEXT
);
CREATE INDEX operations_created_at ON operations (created_at);
""",
    ),
    Retention(max_age=30 * 86400, max_rows=10000, age_field="created_at"),
)

#: Progress is written to the store at most this often (the API reads it from memory).
PROGRESS_WRITE_INTERVAL = 5.0


class Failed(Exception):
    """The work's own way to fail with a message the operator reads (and a result)."""

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message, self.result = message, result or {}


@dataclass
class Operation:
    id: str
    type: str
    target: str
    actor: str
    params: dict[str, Any]
    state: str = "running"
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    progress: OperationProgress = field(default_factory=OperationProgress)
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    _written_at: float = 0.0

    def report(
        self,
        message: str | None = None,
        *,
        fraction: float | None = None,
        done: int | None = None,
        total: int | None = None,
        unit: str | None = None,
    ) -> None:
        """What the work has got through; the ETA follows from the fraction and the time so far."""
        p = self.progress
        if fraction is None and done is not None and total:
            fraction = done / total
        eta = None
        if fraction is not None and 0 < fraction < 1:
            eta = round((time.time() - self.created_at) * (1 - fraction) / fraction, 1)
        self.progress = OperationProgress(
            message=message if message is not None else p.message,
            fraction=round(min(max(fraction, 0.0), 1.0), 4) if fraction is not None else p.fraction,
            done=done if done is not None else p.done,
            total=total if total is not None else p.total,
            unit=unit if unit is not None else p.unit,
            eta_seconds=eta,
        )

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def model(self) -> OperationModel:
        return OperationModel(
            id=self.id,
            type=self.type,
            target=self.target,
            actor=self.actor,
            params=self.params,
            state=self.state,
            created_at=self.created_at,
            finished_at=self.finished_at,
            duration_seconds=round((self.finished_at or time.time()) - self.created_at, 3),
            progress=self.progress,
            result=self.result,
            error=self.error,
        )


Work = Callable[[Operation], Awaitable[dict[str, Any]]]


class Operations:
    """The agent's running and recent operations, one registry for every subsystem."""

    def __init__(self, store: Store, events: EventLog) -> None:
        self.store, self.events = store, events
        store.register(TABLE)
        cut = store.db.execute(
            "UPDATE operations SET state = 'interrupted', finished_at = ?,"
            " error = 'the agent stopped while this operation ran' WHERE state = 'running'",
            (time.time(),),
        ).rowcount
        if cut:
            log.warning("%d operation(s) were interrupted by the agent's last stop", cut)
        self._running: dict[str, tuple[Operation, asyncio.Task[None]]] = {}
        self._work: dict[str, Work] = {}
        # Finished, but the store refused the final write: answered from memory, and
        # written with the next write that succeeds.
        self._unwritten: dict[str, Operation] = {}

    def start(
        self,
        type: str,
        target: str,
        actor: str,
        params: dict[str, Any],
        work: Work,
        *,
        defer: bool = False,
    ) -> Operation:
        """Record the operation (raises sqlite3.Error if the store refuses: nothing has
        started then) and run `work`; with `defer`, only once `run` is called, so the
        caller can act in between and `discard` it if that fails."""
        op = Operation("op-" + secrets.token_hex(6), type, target, actor, params)
        self._write(op)
        self._work[op.id] = work
        if not defer:
            self.run(op)
        return op

    def run(self, op: Operation) -> None:
        work = self._work.pop(op.id)
        task = asyncio.create_task(self._run(op, work), name=f"operation:{op.id}")
        self._running[op.id] = (op, task)

    def discard(self, op: Operation) -> None:
        """A deferred operation whose action could not even be asked: no trace left."""
        self._work.pop(op.id, None)
        with contextlib.suppress(sqlite3.Error):
            self.store.db.execute("DELETE FROM operations WHERE id = ?", (op.id,))

    async def _run(self, op: Operation, work: Work) -> None:
        try:
            op.result = await work(op)
            op.state = "succeeded"
        except Failed as exc:
            op.state, op.error, op.result = "failed", exc.message, exc.result
        except asyncio.CancelledError:
            op.state = "cancelled" if op.state == "cancelling" else "interrupted"
            op.error = op.error or "cancelled"
        except Exception as exc:  # a bug in the work: the operation says so, the agent goes on
            log.exception("operation %s (%s %s) failed", op.id, op.type, op.target)
            op.state, op.error = "failed", f"internal error: {type(exc).__name__}: {exc}"
        finally:
            op.finished_at = time.time()
            self._running.pop(op.id, None)
            self._unwritten[op.id] = op
            self._write_quietly(op)
            self.events.emit(
                f"operation_{op.state}",
                "info" if op.state == "succeeded" else "warning",
                f"{op.type} {op.target} ({op.id}) {op.state}"
                + (f": {op.error}" if op.error else ""),
                evidence={"operation": op.id, "actor": op.actor, "result": op.result},
            )

    def get(self, op_id: str) -> Operation | None:
        if op_id in self._running:
            return self._running[op_id][0]
        if op_id in self._unwritten:
            return self._unwritten[op_id]
        row = self.store.db.execute(f"{_SELECT} WHERE id = ?", (op_id,)).fetchone()
        return _from_row(row) if row else None

    def recent(self, limit: int = 50, state: str | None = None) -> list[Operation]:
        """Newest first; running ones as they are now."""
        where, args = ("WHERE state = ?", (state,)) if state else ("", ())
        rows = self.store.db.execute(
            f"{_SELECT} {where} ORDER BY created_at DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [self.get(r[0]) or _from_row(r) for r in rows]

    def progressed(self, op: Operation) -> None:
        """Called by work after `report`: the store gets the progress now and then."""
        if time.time() - op._written_at >= PROGRESS_WRITE_INTERVAL:
            self._write_quietly(op)

    async def cancel(self, op_id: str) -> Operation | None:
        """Cancel a running operation and wait for its work to end; None if unknown."""
        entry = self._running.get(op_id)
        if entry is None:
            return self.get(op_id)
        op, task = entry
        if op.state != "cancelling":  # a second cancel waits; it does not cut the cleanup
            op.state = "cancelling"
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return op

    async def stop(self) -> None:
        """Agent shutdown: running operations end as `interrupted`."""
        tasks = [task for _, task in self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _write_quietly(self, op: Operation) -> None:
        """The store refusing (a full disk) neither fails the work nor leaves the
        operation `running` in the list: memory answers until a write succeeds."""
        try:
            for pending in [*self._unwritten.values()]:
                if pending is not op:
                    self._write(pending)
                    del self._unwritten[pending.id]
            self._write(op)
            self._unwritten.pop(op.id, None)
        except sqlite3.Error as exc:
            log.warning("operation %s: not written to the store (%s); kept in memory", op.id, exc)

    def _write(self, op: Operation) -> None:
        op._written_at = time.time()
        self.store.db.execute(
            "INSERT OR REPLACE INTO operations (id, type, target, actor, params, state,"
            " created_at, finished_at, progress, result, error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                op.id,
                op.type,
                op.target,
                op.actor,
                json.dumps(op.params, default=str),
                "running" if op.state == "cancelling" else op.state,
                op.created_at,
                op.finished_at,
                op.progress.model_dump_json(),
                json.dumps(op.result, default=str),
                op.error,
            ),
        )


_SELECT = (
    "SELECT id, type, target, actor, params, state, created_at, finished_at, progress,"
    " result, error FROM operations"
)


def _from_row(row: tuple[Any, ...]) -> Operation:
    return Operation(
        id=row[0],
        type=row[1],
        target=row[2],
        actor=row[3],
        params=json.loads(row[4]),
        state=row[5],
        created_at=row[6],
        finished_at=row[7],
        progress=OperationProgress.model_validate_json(row[8]),
        result=json.loads(row[9]),
        error=row[10],
    )
