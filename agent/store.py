"""The agent's state in SQLite (WAL): events, probe results, recovery attempts, actions.

One file under the state directory, so history survives agent restarts and a
crash mid-write leaves the database consistent (each write is one transaction).
Retention is bounded by age and by row count, pruned periodically.

Probe results are the one buffered write: they are kept for up to
RESULTS_FLUSH_DELAY (on the agent's tick, agent/ticks.py, so the write shares a
wake-up with probe runs) and written together in one transaction. At dozens of
probe runs a second, one commit per result was a tenth of the agent's CPU; a
crash loses at most the last second and a quarter of results, never an event or
an attempt.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.ticks import next_tick

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    service TEXT,
    probe TEXT,
    message TEXT NOT NULL,
    evidence TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS probe_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    probe TEXT NOT NULL,
    ts REAL NOT NULL,
    ok INTEGER NOT NULL,
    latency REAL NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS probe_results_probe_ts ON probe_results (probe, ts);
CREATE TABLE IF NOT EXISTS recovery_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    service TEXT NOT NULL,
    ts REAL NOT NULL,
    step TEXT NOT NULL,
    result TEXT NOT NULL,
    detail TEXT NOT NULL,
    duration REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS recovery_attempts_service_ts ON recovery_attempts (service, ts);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    ok INTEGER NOT NULL,
    detail TEXT NOT NULL,
    duration REAL NOT NULL
);
"""


RESULTS_FLUSH_DELAY = 1.0

_ResultRow = tuple[str, float, int, float, str]


@dataclass(frozen=True)
class EventRow:
    id: int
    ts: float
    kind: str
    severity: str
    service: str | None
    probe: str | None
    message: str
    evidence: dict[str, Any]


@dataclass(frozen=True)
class AttemptRow:
    id: int
    service: str
    ts: float
    step: str
    result: str
    detail: str
    duration: float


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self._results: list[_ResultRow] = []
        self._results_flush: asyncio.TimerHandle | None = None
        self.db.executescript(SCHEMA)
        # An attempt still `running` was cut short by a crash or kill of the agent.
        self.db.execute(
            "UPDATE recovery_attempts SET result = 'interrupted',"
            " detail = 'the agent stopped during this attempt' WHERE result = 'running'"
        )

    def close(self) -> None:
        self.flush_results()
        self.db.close()

    def add_event(
        self,
        ts: float,
        kind: str,
        severity: str,
        message: str,
        service: str | None,
        probe: str | None,
        evidence: dict[str, Any],
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO events (ts, kind, severity, service, probe, message, evidence)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ts, kind, severity, service, probe, message, json.dumps(evidence, default=str)),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def events(
        self, since: int = 0, limit: int = 200, min_severity: str | None = None
    ) -> list[EventRow]:
        """Events after id `since`; with since=0 the newest `limit`, in ascending id order."""
        where, args = "id > ?", [since]
        if min_severity == "warning":
            where += " AND severity IN ('warning', 'critical')"
        elif min_severity == "critical":
            where += " AND severity = 'critical'"
        order = "ASC" if since else "DESC"
        rows = self.db.execute(
            f"SELECT id, ts, kind, severity, service, probe, message, evidence FROM events"  # noqa: S608
            f" WHERE {where} ORDER BY id {order} LIMIT ?",
            (*args, limit),
        ).fetchall()
        if not since:
            rows.reverse()
        return [
            EventRow(
                id=r[0],
                ts=r[1],
                kind=r[2],
                severity=r[3],
                service=r[4],
                probe=r[5],
                message=r[6],
                evidence=json.loads(r[7]),
            )
            for r in rows
        ]

    def add_probe_result(
        self, probe: str, ts: float, ok: bool, latency: float, detail: str
    ) -> None:
        """Buffered (see the module's doc); outside an event loop, written at once."""
        self._results.append((probe, ts, int(ok), latency, detail))
        if self._results_flush is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush_results()
            return
        self._results_flush = loop.call_at(next_tick(loop, RESULTS_FLUSH_DELAY), self.flush_results)

    def flush_results(self) -> None:
        if self._results_flush is not None:
            self._results_flush.cancel()
            self._results_flush = None
        if not self._results:
            return
        rows, self._results = self._results, []
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO probe_results (probe, ts, ok, latency, detail) VALUES (?, ?, ?, ?, ?)",
                rows,
            )

    def probe_results(self, probe: str, limit: int = 50) -> list[tuple[float, bool, float, str]]:
        self.flush_results()
        rows = self.db.execute(
            "SELECT ts, ok, latency, detail FROM probe_results WHERE probe = ?"
            " ORDER BY id DESC LIMIT ?",
            (probe, limit),
        ).fetchall()
        return [(ts, bool(ok), lat, detail) for ts, ok, lat, detail in reversed(rows)]

    def add_attempt(
        self, service: str, ts: float, step: str, result: str, detail: str, duration: float
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO recovery_attempts (service, ts, step, result, detail, duration)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (service, ts, step, result, detail, duration),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def finish_attempt(self, attempt_id: int, result: str, detail: str, duration: float) -> None:
        self.db.execute(
            "UPDATE recovery_attempts SET result = ?, detail = ?, duration = ? WHERE id = ?",
            (result, detail, duration, attempt_id),
        )

    def attempts(self, service: str, since_ts: float = 0.0, limit: int = 50) -> list[AttemptRow]:
        rows = self.db.execute(
            "SELECT id, service, ts, step, result, detail, duration FROM recovery_attempts"
            " WHERE service = ? AND ts >= ? ORDER BY id DESC LIMIT ?",
            (service, since_ts, limit),
        ).fetchall()
        return [AttemptRow(*r) for r in reversed(rows)]

    def add_action(
        self,
        ts: float,
        actor: str,
        action: str,
        target: str,
        ok: bool,
        detail: str,
        duration: float,
    ) -> None:
        self.db.execute(
            "INSERT INTO actions (ts, actor, action, target, ok, detail, duration)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ts, actor, action, target, int(ok), detail, duration),
        )

    def prune(
        self,
        events_age: float,
        results_age: float,
        max_events: int,
        max_results: int,
        now: float | None = None,
    ) -> None:
        """Delete what retention no longer keeps. Runs in a worker thread, on a connection
        of its own and in small transactions: the event loop's writes on the main
        connection wait for one batch at most, never for the whole prune, and never end
        up inside the prune's transaction."""
        now = time.time() if now is None else now
        db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        try:
            for table, age, most in (
                ("events", events_age, max_events),
                ("probe_results", results_age, max_results),
                ("recovery_attempts", events_age, None),
                ("actions", events_age, None),
            ):
                where = "ts < ?"
                args: tuple[float, ...] = (now - age,)
                if most is not None:
                    last = db.execute(f"SELECT MAX(id) FROM {table}").fetchone()[0] or 0  # noqa: S608
                    where += " OR id <= ?"
                    args += (last - most,)
                _delete_in_batches(db, table, where, args)
        finally:
            db.close()


PRUNE_BATCH = 2000


def _delete_in_batches(
    db: sqlite3.Connection, table: str, where: str, args: tuple[float, ...]
) -> None:
    sql = (
        f"DELETE FROM {table} WHERE id IN"  # noqa: S608 - table names are ours, values bound
        f" (SELECT id FROM {table} WHERE {where} LIMIT {PRUNE_BATCH})"
    )
    while db.execute(sql, args).rowcount == PRUNE_BATCH:
        pass
