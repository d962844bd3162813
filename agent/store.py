"""The agent's state in SQLite (WAL): events, probe results, recovery attempts, actions,
and the tables that subsystems register.

One file under the state directory, so history survives agent restarts and a
crash mid-write leaves the database consistent (each write is one transaction).

Schema versions (docs/store.md). `PRAGMA user_version` is the version of the
store's own schema, MIGRATIONS below: 1 is the schema of the first releases,
which wrote no version, so a database at 0 that has those tables adopts 1 as it
is; 2 adds `table_versions`. A table that a subsystem registers (`Table`)
carries its own migrations and its version is a row of `table_versions`: a
subsystem that is not configured, and so not imported, leaves no hole in anyone
else's numbering. Each migration runs in one transaction with its version
bump, so a crash mid-way leaves the previous version. A database or table that
a newer agent wrote (a version above what this one knows) is refused with a
StoreError before anything is written to it: an older agent cannot know what a
newer one's rows mean.

Retention is bounded by age and by row count, per table (`Retention`), and
pruned periodically, on a connection of its own in small batches (`prune`).

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
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import __version__
from agent.ticks import next_tick

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

HISTORY_TABLES = ("events", "probe_results", "recovery_attempts", "actions")


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


RESULTS_FLUSH_DELAY = 1.0
#: Results the disk refused, kept in memory (oldest dropped beyond this) until it takes
#: writes again: about 10 minutes of 50 probes every 5 s.
RESULTS_KEPT = 6000
#: A refused flush is logged at most this often.
COMPLAIN_EVERY = 60.0

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


#: How long a write on the event loop waits for another connection's lock, in ms.
RUNTIME_BUSY_MS = 200


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._tables: dict[str, Table] = {}
        self._retention: dict[str, Retention] = {}
        self._results: list[_ResultRow] = []
        self._results_flush: asyncio.TimerHandle | None = None
        self._complained_at = -COMPLAIN_EVERY
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
            # An attempt still `running` was cut short by a crash or kill of the agent.
            self.db.execute(
                "UPDATE recovery_attempts SET result = 'interrupted',"
                " detail = 'the agent stopped during this attempt' WHERE result = 'running'"
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

    def close(self) -> None:
        self.flush_results()
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
        try:
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany(
                    "INSERT INTO probe_results (probe, ts, ok, latency, detail)"
                    " VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
        except sqlite3.Error as exc:
            # Called from a loop callback too: never raise there. A full or failing disk
            # keeps the rows for the next flush (the next result arms one); detection goes
            # on from memory either way.
            self._results = (rows + self._results)[-RESULTS_KEPT:]
            now = time.monotonic()
            if now - self._complained_at >= COMPLAIN_EVERY:
                self._complained_at = now
                log.warning(
                    "cannot write probe results to %s: %s; %d kept in memory until it can",
                    self.path,
                    exc,
                    len(self._results),
                )

    def probe_results(self, probe: str, limit: int = 50) -> list[tuple[float, bool, float, str]]:
        """The newest `limit` results of `probe`, oldest first, those still in memory too."""
        self.flush_results()
        rows = self.db.execute(
            "SELECT ts, ok, latency, detail FROM probe_results WHERE probe = ?"
            " ORDER BY id DESC LIMIT ?",
            (probe, limit),
        ).fetchall()
        pending = [(ts, ok, lat, d) for p, ts, ok, lat, d in self._results if p == probe]
        return [(ts, bool(ok), lat, d) for ts, ok, lat, d in [*reversed(rows), *pending]][-limit:]

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

    def retain_history(
        self, events_age: float, results_age: float, max_events: int, max_results: int
    ) -> None:
        """The retention of the store's own tables, from the config's `retention` section:
        recovery attempts and actions are kept as long as events."""
        self.retain("events", Retention(events_age, max_events))
        self.retain("probe_results", Retention(results_age, max_results))
        self.retain("recovery_attempts", Retention(events_age))
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
