"""Recovery attempts in the store: supervision's `recovery_attempts` table.

An attempt is written `running` when it starts and finished with its result, so
one still `running` when the agent opens the file was cut short by a crash or a
kill of the agent: it is marked `interrupted` then (it still counts against the
service's attempt budget). Like probe results, the table is the store's schema
version 1 in every database made so far; registering it adopts it as it is.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from agent.store import Retention, Store, StoreError, Table

RECOVERY_ATTEMPTS = Table(
    "recovery_attempts",
    (
        # 1: as the store's schema version 1 made it (so an existing table is adopted).
        """
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
""",
    ),
)


@dataclass(frozen=True)
class AttemptRow:
    id: int
    service: str
    ts: float
    step: str
    result: str
    detail: str
    duration: float


class RecoveryAttempts:
    def __init__(self, store: Store) -> None:
        """Once per agent process, before any ladder runs (see the module's doc)."""
        store.register(RECOVERY_ATTEMPTS)
        self.db = store.db
        self.store = store
        try:
            self.db.execute(
                "UPDATE recovery_attempts SET result = 'interrupted',"
                " detail = 'the agent stopped during this attempt' WHERE result = 'running'"
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{store.path}: {exc}") from None

    def retain(self, max_age: float) -> None:
        self.store.retain(RECOVERY_ATTEMPTS.name, Retention(max_age))

    def add(
        self, service: str, ts: float, step: str, result: str, detail: str, duration: float
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO recovery_attempts (service, ts, step, result, detail, duration)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (service, ts, step, result, detail, duration),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def finish(self, attempt_id: int, result: str, detail: str, duration: float) -> None:
        self.db.execute(
            "UPDATE recovery_attempts SET result = ?, detail = ?, duration = ? WHERE id = ?",
            (result, detail, duration, attempt_id),
        )

    def of(self, service: str, since_ts: float = 0.0, limit: int = 50) -> list[AttemptRow]:
        rows = self.db.execute(
            "SELECT id, service, ts, step, result, detail, duration FROM recovery_attempts"
            " WHERE service = ? AND ts >= ? ORDER BY id DESC LIMIT ?",
            (service, since_ts, limit),
        ).fetchall()
        return [AttemptRow(*r) for r in reversed(rows)]
