"""The agent's state in SQLite (WAL): events and actions, and the tables that subsystems
register (probe results and recovery attempts: supervision's; operations, job runs).

One file under the state directory, so history survives agent restarts and a
crash mid-write leaves the database consistent (each write is one transaction).

Schema versions (docs/store.md). `PRAGMA user_version` is the version of the
store's own schema, MIGRATIONS below: 1 is the schema of the first releases,
which wrote no version, so a database at 0 that has those tables adopts 1 as it
is; 2 adds `table_versions`. Version 1 also made the `probe_results` and
`recovery_attempts` tables, which supervision now registers as its own (a
registration adopts an existing table as it is). A table that a subsystem registers (`Table`)
carries its own migrations and its version is a row of `table_versions`: a
subsystem that is not configured, and so not imported, leaves no hole in anyone
else's numbering. Each migration runs in one transaction with its version
bump, so a crash mid-way leaves the previous version. A database or table that
a newer agent wrote (a version above what this one knows) is refused with a
StoreError before anything is written to it: an older agent cannot know what a
newer one's rows mean.

Retention is bounded by age and by row count, per table (`Retention`), and
pruned periodically, on a connection of its own in small batches (`prune`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import __version__

log = logging.getLogger("hadeck.store")

# A migration: SQL statements, or a function of the connection (a data migration that SQL
# cannot express; it must not commit). Either runs inside the migration's transaction.
Migration = str | Callable[[sqlite3.Connection], None]

# The store's own schema; version n is the first n applied. Append, never edit one that has
# shipped: databases in the field are at every earlier version.
MIGRATIONS: tuple[Migration, ...] = (
    # 1: the schema of the first releases (as they wrote it, so a version-0 file adopts it).
    """
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
""",
    # 2: the versions of the tables subsystems register.
    "CREATE TABLE table_versions (name TEXT PRIMARY KEY, version INTEGER NOT NULL)",
)

#: The store's own tables (the others are registered).
HISTORY_TABLES = ("events", "actions")


class StoreError(OSError):
    """The state database cannot be used as it is; the message names the file and what to do.

    An OSError because, like a permission problem, the file is unusable: whoever reports
    an unusable state directory (the agent's start) reports this too."""


@dataclass(frozen=True)
class Retention:
    """How long a table keeps rows: those whose `age_field` (epoch seconds) is older than
    `max_age` go, and beyond the newest `max_rows` (by rowid) the oldest go. None: no bound."""

    max_age: float | None = None
    max_rows: int | None = None
    age_field: str = "ts"

    def __post_init__(self) -> None:
        if not self.age_field.isidentifier():
            raise ValueError(f"age_field {self.age_field!r} is not a column name")


@dataclass(frozen=True)
class Table:
    """A table a subsystem owns, registered with `Store.register`.

    `migrations[0]` creates it; each later one changes it, in order (version n is the first
    n applied). Append, never edit one that has shipped. `retention` is its default rule;
    `Store.retain` changes it (say, from the subsystem's config on a reload)."""

    name: str
    migrations: tuple[Migration, ...]
    retention: Retention | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"table name {self.name!r} is not an SQL identifier")
        if not self.migrations:
            raise ValueError(f"table {self.name}: give at least the migration that creates it")


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


#: How long a write on the event loop waits for another connection's lock, in ms.
RUNTIME_BUSY_MS = 200


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._tables: dict[str, Table] = {}
        self._retention: dict[str, Retention] = {}
        self._before_close: list[Callable[[], None]] = []
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: {exc}") from None
        try:
            self.db.execute("PRAGMA busy_timeout=5000")
            # Refused before the first write (WAL mode is one): a newer agent's file stays as it is.
            self._refuse_newer("the database's schema", self.schema_version(), len(MIGRATIONS))
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._migrate(
                "the database's schema", MIGRATIONS, self.schema_version, self._set_schema_version
            )
            # From here on every write is made on the event loop: waiting 5 s for a lock
            # another process holds (an sqlite3 shell in a transaction) stalled the whole
            # agent. A write that cannot have the lock within RUNTIME_BUSY_MS fails as on a
            # full disk, and each writer keeps what it could not write and retries. The
            # prune's own connection deletes in batches well inside this.
            self.db.execute(f"PRAGMA busy_timeout={RUNTIME_BUSY_MS}")
        except BaseException as exc:
            self.db.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"{path}: {exc}") from None
            raise

    def before_close(self, write: Callable[[], None]) -> None:
        """`write` runs at close, before the file is: a subsystem's buffered rows."""
        self._before_close.append(write)

    def close(self) -> None:
        for write in self._before_close:
            write()
        self.db.close()

    # -- schema ----------------------------------------------------------------

    def register(self, table: Table) -> None:
        """Brings a subsystem's table to its newest version (creating it on first use) and
        prunes it by its retention from now on. Registering it again (a reload) is harmless.
        Raises StoreError if a newer agent wrote the table, or a migration fails."""
        if table.name in HISTORY_TABLES or table.name == "table_versions":
            raise ValueError(f"table {table.name} is the store's own")
        known = self._tables.get(table.name)
        if known is not None and known.migrations != table.migrations:
            raise ValueError(f"table {table.name} is registered with other migrations")

        def version() -> int:
            row = self.db.execute(
                "SELECT version FROM table_versions WHERE name = ?", (table.name,)
            ).fetchone()
            return int(row[0]) if row else 0

        def set_version(version: int) -> None:
            self.db.execute(
                "INSERT OR REPLACE INTO table_versions (name, version) VALUES (?, ?)",
                (table.name, version),
            )

        try:
            self._migrate(f"table {table.name}", table.migrations, version, set_version)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: table {table.name}: {exc}") from None
        if known is None:
            self._tables[table.name] = table
            if table.retention is not None:
                self._retention[table.name] = table.retention

    def schema_version(self) -> int:
        """The version of the store's own schema in the file (PRAGMA user_version)."""
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def table_versions(self) -> dict[str, int]:
        """The version of every table that subsystems registered in the file, this agent's
        or not."""
        rows = self.db.execute("SELECT name, version FROM table_versions").fetchall()
        return {name: int(version) for name, version in rows}

    def _set_schema_version(self, version: int) -> None:
        self.db.execute(f"PRAGMA user_version = {int(version)}")

    def _refuse_newer(self, what: str, version: int, known: int) -> None:
        if version > known:
            raise StoreError(
                f"{self.path}: {what} is at version {version}, but this hadeck-agent"
                f" ({__version__}) knows versions up to {known}: a newer agent wrote it."
                f" Run that newer agent, or move the file away to start with an empty history;"
                f" the file is left as it is"
            )

    def _migrate(
        self,
        what: str,
        migrations: tuple[Migration, ...],
        version: Callable[[], int],
        set_version: Callable[[int], None],
    ) -> None:
        """Applies the migrations after the file's version, each in one transaction with
        its version bump (re-read inside it: another process may have moved it)."""
        self._refuse_newer(what, version(), len(migrations))
        while version() < len(migrations):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                current = version()
                self._refuse_newer(what, current, len(migrations))
                if current < len(migrations):
                    step = migrations[current]
                    try:
                        if callable(step):
                            step(self.db)
                        else:
                            for statement in _statements(step):
                                self.db.execute(statement)
                    except Exception as exc:
                        raise StoreError(
                            f"{self.path}: {what}: the migration to version {current + 1}"
                            f" failed, so it stays at version {current}: {exc}"
                        ) from exc
                    set_version(current + 1)
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    # -- history -------------------------------------------------------------

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

    # -- retention -------------------------------------------------------------

    def retain(self, table: str, retention: Retention | None) -> None:
        """Sets the retention of one of the store's tables or a registered one (None: keep
        every row); the next prune applies it."""
        if table not in HISTORY_TABLES and table not in self._tables:
            raise ValueError(f"no table {table} in the store (register it first)")
        if retention is None:
            self._retention.pop(table, None)
        else:
            self._retention[table] = retention

    def retain_history(self, events_age: float, max_events: int) -> None:
        """The retention of the store's own tables, from the config's `retention` section:
        actions are kept as long as events."""
        self.retain("events", Retention(events_age, max_events))
        self.retain("actions", Retention(events_age))

    def prune(self, now: float | None = None) -> None:
        """Delete what each table's retention no longer keeps. Runs in a worker thread, on a
        connection of its own and in small transactions: the event loop's writes on the main
        connection wait for one batch at most, never for the whole prune, and never end
        up inside the prune's transaction."""
        now = time.time() if now is None else now
        rules = list(self._retention.items())  # one read: `retain` may run on the loop meanwhile
        db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        try:
            for table, rule in rules:
                clauses, args = [], []
                if rule.max_age is not None:
                    clauses.append(f"{rule.age_field} < ?")
                    args.append(now - rule.max_age)
                if rule.max_rows is not None:
                    last = db.execute(f"SELECT MAX(rowid) FROM {table}").fetchone()[0] or 0  # noqa: S608
                    clauses.append("rowid <= ?")
                    args.append(last - rule.max_rows)
                if clauses:
                    _delete_in_batches(db, table, " OR ".join(clauses), tuple(args))
        finally:
            db.close()


PRUNE_BATCH = 2000


def _delete_in_batches(
    db: sqlite3.Connection, table: str, where: str, args: tuple[float, ...]
) -> None:
    sql = (
        f"DELETE FROM {table} WHERE rowid IN"  # noqa: S608 - names are checked identifiers
        f" (SELECT rowid FROM {table} WHERE {where} LIMIT {PRUNE_BATCH})"
    )
    while db.execute(sql, args).rowcount == PRUNE_BATCH:
        pass


def _statements(script: str) -> Iterator[str]:
    """The statements of an SQL script, one at a time: `executescript` would commit the
    migration's transaction before running them."""
    statement = ""
    for part in script.split(";"):
        statement += part + ";"
        if sqlite3.complete_statement(statement):  # a `;` inside a string or trigger is not an end
            if statement.strip(" \t\n;"):
                yield statement
            statement = ""
