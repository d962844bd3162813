"""The state store keeps history across reopen and stays bounded, and opens every earlier
version of its file without losing what is in it."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.probes.results import RESULTS_FLUSH_DELAY, ProbeResults
from agent.recovery.attempts import RecoveryAttempts
from agent.store import (
    MIGRATIONS,
    Retention,
    Store,
    StoreError,
    Table,
)


def test_events_survive_reopen_and_cursor_paging(tmp_path):
    store = Store(tmp_path / "state.db")
    ids = [store.add_event(float(i), "k", "info", f"m{i}", None, None, {"i": i}) for i in range(5)]
    store.close()
    store = Store(tmp_path / "state.db")
    assert [e.id for e in store.events(limit=3)] == ids[-3:]  # newest three, oldest first
    assert [e.evidence["i"] for e in store.events(since=ids[1], limit=2)] == [2, 3]
    assert [e.id for e in store.events(min_severity="warning")] == []


def test_prune_bounds_by_age_and_by_count(tmp_path):
    store = Store(tmp_path / "state.db")
    results, attempts = ProbeResults(store), RecoveryAttempts(store)
    for i in range(200):
        store.add_event(float(i), "k", "info", "m", None, None, {})
        results.add("p", float(i), True, 0.1, "ok")
    attempts.add("svc", 1.0, "restart", "failed", "x", 0.5)
    store.add_action(1.0, "ops", "restart", "svc", True, "", 0.1)
    store.add_action(199.0, "ops", "restart", "svc", True, "", 0.1)
    store.retain_history(events_age=150, max_events=100)
    results.retain(max_age=50, max_rows=1000)
    attempts.retain(max_age=150)
    store.prune(now=200.0)
    events = store.events(limit=1000)
    assert len(events) == 100 and events[0].ts == 100.0  # the count bound wins here
    kept = results.recent("p", limit=1000)
    assert len(kept) == 50 and kept[0][0] == 150.0  # the age bound wins here
    assert attempts.of("svc") == []
    assert store.db.execute("SELECT ts FROM actions").fetchall() == [(199.0,)]


def test_wal_mode(tmp_path):
    store = Store(tmp_path / "state.db")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_probe_results_reach_the_file_soon_and_all_on_close(tmp_path):
    store = Store(tmp_path / "state.db")
    results = ProbeResults(store)
    reader = sqlite3.connect(tmp_path / "state.db")

    def on_disk() -> int:
        return int(reader.execute("SELECT COUNT(*) FROM probe_results").fetchone()[0])

    for i in range(30):
        results.add("p", float(i), i % 2 == 0, 0.01, "ok")
    deadline = time.monotonic() + RESULTS_FLUSH_DELAY + 5
    while on_disk() < 30:
        assert time.monotonic() < deadline, f"only {on_disk()} of 30 results written"
        await asyncio.sleep(0.05)
    results.add("p", 30.0, True, 0.01, "last")
    store.close()  # a clean stop writes what is still buffered
    assert on_disk() == 31
    assert reader.execute("SELECT detail FROM probe_results ORDER BY id DESC").fetchone() == (
        "last",
    )


async def test_results_flush_while_a_prune_runs_in_a_worker_thread(tmp_path):
    # The agent prunes in a worker thread while the loop goes on writing.
    store = Store(tmp_path / "state.db")
    results = ProbeResults(store)
    results.retain(max_age=1e9, max_rows=10**6)
    stop = threading.Event()

    def prune_until_stopped() -> int:
        rounds = 0
        while not stop.is_set():
            store.prune()
            rounds += 1
        return rounds

    pruner = asyncio.get_running_loop().run_in_executor(None, prune_until_stopped)
    try:
        for _ in range(300):
            results.add("p", time.time(), True, 0.01, "ok")  # kept by retention
            results.flush()  # from the loop: must not fail while the prune runs
            await asyncio.sleep(0)
    finally:
        stop.set()
        assert await pruner > 0
    store.close()
    reader = sqlite3.connect(tmp_path / "state.db")
    assert reader.execute("SELECT COUNT(*) FROM probe_results").fetchone()[0] == 300


# -- schema versions ---------------------------------------------------------------------

# The schema as the first releases wrote it (user_version 0), copied from them: databases
# in the field have exactly this. Never edit it.
FIRST_RELEASES_SCHEMA = """
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


def _history(db: sqlite3.Connection) -> None:
    """What an agent of the first releases had written: one row of every table."""
    db.execute(
        "INSERT INTO events (ts, kind, severity, service, probe, message, evidence)"
        " VALUES (10.0, 'service_down', 'critical', 'web', 'web-http', 'down', '{\"n\": 1}')"
    )
    db.execute(
        "INSERT INTO probe_results (probe, ts, ok, latency, detail)"
        " VALUES ('web-http', 11.0, 0, 0.5, 'HTTP 503')"
    )
    db.execute(
        "INSERT INTO recovery_attempts (service, ts, step, result, detail, duration)"
        " VALUES ('web', 12.0, 'restart', 'running', '', 0.0)"
    )
    db.execute(
        "INSERT INTO actions (ts, actor, action, target, ok, detail, duration)"
        " VALUES (13.0, 'ops', 'restart', 'web', 1, 'restarted', 1.5)"
    )


def _v0(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(FIRST_RELEASES_SCHEMA)
    _history(db)
    db.close()


def _v1(path: Path) -> None:
    _v0(path)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA user_version = 1")
    db.close()


# Each earlier version's database, built as that version's agent left it. A new migration
# needs the builder of the version before it here (the test below checks they are all here).
EARLIER_VERSIONS: dict[int, Callable[[Path], None]] = {0: _v0, 1: _v1}


def _schema(path: Path) -> list[tuple[str, str, str]]:
    db = sqlite3.connect(path)
    try:
        return sorted(db.execute("SELECT type, name, sql FROM sqlite_master").fetchall())
    finally:
        db.close()


def test_every_earlier_version_has_a_migration_test():
    assert sorted(EARLIER_VERSIONS) == list(range(len(MIGRATIONS)))


@pytest.mark.parametrize("version", sorted(EARLIER_VERSIONS))
def test_a_database_of_every_earlier_version_opens_at_the_newest_with_its_data(tmp_path, version):
    path = tmp_path / "state.db"
    EARLIER_VERSIONS[version](path)
    store = Store(path)
    assert store.schema_version() == len(MIGRATIONS)
    [event] = store.events()
    assert (event.kind, event.service, event.evidence) == ("service_down", "web", {"n": 1})
    assert ProbeResults(store).recent("web-http") == [(11.0, False, 0.5, "HTTP 503")]
    [attempt] = RecoveryAttempts(store).of("web")
    assert (attempt.step, attempt.result) == ("restart", "interrupted")
    assert store.db.execute("SELECT actor, ok, duration FROM actions").fetchall() == [
        ("ops", 1, 1.5)
    ]
    store.close()
    Store(tmp_path / "fresh.db").close()
    assert _schema(path) == _schema(tmp_path / "fresh.db")  # as if created by this version


@pytest.mark.parametrize("kind", ["missing", "empty file", "empty database"])
def test_an_empty_database_is_created_at_the_newest_version(tmp_path, kind):
    path = tmp_path / "state.db"
    if kind == "empty file":
        path.write_bytes(b"")
    elif kind == "empty database":
        sqlite3.connect(path).execute("PRAGMA user_version = 0").connection.close()
    store = Store(path)
    assert (store.schema_version(), store.table_versions()) == (len(MIGRATIONS), {})
    store.add_event(1.0, "k", "info", "m", None, None, {})
    assert len(store.events()) == 1


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_database_from_a_newer_agent_is_refused_and_left_as_it_is(tmp_path):
    path = tmp_path / "state.db"
    newer = len(MIGRATIONS) + 1
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(FIRST_RELEASES_SCHEMA)
    db.execute("CREATE TABLE what_a_newer_agent_keeps (x)")
    db.execute("INSERT INTO what_a_newer_agent_keeps VALUES (1)")
    _history(db)
    db.execute(f"PRAGMA user_version = {newer}")
    db.close()
    before = _digest(path)
    with pytest.raises(StoreError) as refused:
        Store(path)
    message = str(refused.value)
    assert str(path) in message
    assert f"version {newer}" in message and f"up to {len(MIGRATIONS)}" in message
    assert _digest(path) == before
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == newer
    assert db.execute("SELECT result FROM recovery_attempts").fetchall() == [("running",)]


def test_a_file_that_is_not_a_database_is_refused_naming_it(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError, match=str(path)):
        Store(path)
    assert path.read_bytes() == b"this is not SQLite" * 100


# -- tables that subsystems register -----------------------------------------------------


def _sizes_from_names(db: sqlite3.Connection) -> None:
    # A data migration SQL alone would not say: here, a size parsed from the name.
    for rowid, name in db.execute("SELECT id, name FROM backup_runs").fetchall():
        db.execute(
            "UPDATE backup_runs SET bytes = ? WHERE id = ?", (int(name.split("-")[1]), rowid)
        )


BACKUP_MIGRATIONS = (
    "CREATE TABLE backup_runs (id INTEGER PRIMARY KEY, ts REAL NOT NULL, name TEXT NOT NULL)",
    """
    ALTER TABLE backup_runs ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX backup_runs_ts ON backup_runs (ts);
    """,
    _sizes_from_names,
)


def backup_runs(version: int = len(BACKUP_MIGRATIONS), **retention: float) -> Table:
    return Table(
        "backup_runs", BACKUP_MIGRATIONS[:version], Retention(**retention) if retention else None
    )


@pytest.mark.parametrize("version", range(len(BACKUP_MIGRATIONS)))
def test_a_registered_table_of_every_earlier_version_migrates_with_its_data(tmp_path, version):
    path = tmp_path / "state.db"
    store = Store(path)
    if version:
        store.register(backup_runs(version))
        store.db.execute("INSERT INTO backup_runs (ts, name) VALUES (1.0, 'nightly-512')")
    store.close()

    store = Store(path)
    store.register(backup_runs())
    assert store.table_versions()["backup_runs"] == len(BACKUP_MIGRATIONS)
    rows = store.db.execute("SELECT ts, name, bytes FROM backup_runs").fetchall()
    assert rows == ([(1.0, "nightly-512", 512)] if version else [])
    store.close()
    fresh = Store(tmp_path / "fresh.db")
    fresh.register(backup_runs())
    fresh.close()
    assert _schema(path) == _schema(tmp_path / "fresh.db")


def test_registering_again_changes_nothing(tmp_path):
    store = Store(tmp_path / "state.db")
    store.register(backup_runs())
    store.db.execute("INSERT INTO backup_runs (ts, name) VALUES (1.0, 'a-1')")
    store.register(backup_runs())  # a reload
    assert store.db.execute("SELECT COUNT(*) FROM backup_runs").fetchone()[0] == 1
    with pytest.raises(ValueError, match="other migrations"):
        store.register(Table("backup_runs", ("CREATE TABLE backup_runs (x)",)))
    with pytest.raises(ValueError, match="store's own"):
        store.register(Table("events", ("CREATE TABLE events (x)",)))


def test_a_table_from_a_newer_agent_is_refused_and_left_as_it_is(tmp_path):
    path = tmp_path / "state.db"
    store = Store(path)
    store.register(backup_runs())
    store.db.execute("INSERT INTO backup_runs (ts, name) VALUES (1.0, 'a-1')")
    store.close()
    store = Store(path)  # the older agent: it knows backup_runs up to version 2
    with pytest.raises(StoreError) as refused:
        store.register(backup_runs(2))
    message = str(refused.value)
    assert str(path) in message and "backup_runs" in message
    assert f"version {len(BACKUP_MIGRATIONS)}" in message and "up to 2" in message
    assert store.table_versions()["backup_runs"] == len(BACKUP_MIGRATIONS)
    assert store.db.execute("SELECT name FROM backup_runs").fetchall() == [("a-1",)]


def test_a_failed_migration_leaves_the_previous_version(tmp_path):
    store = Store(tmp_path / "state.db")
    store.register(backup_runs(1))
    store.db.execute("INSERT INTO backup_runs (ts, name) VALUES (1.0, 'a-1')")
    store.close()
    store = Store(tmp_path / "state.db")  # the next agent, with a broken migration 2
    broken = Table(
        "backup_runs",
        (
            BACKUP_MIGRATIONS[0],
            "ALTER TABLE backup_runs ADD COLUMN bytes INTEGER; UPDATE backup_runs SET nope = 1",
        ),
    )
    with pytest.raises(StoreError, match="version 2 failed, so it stays at version 1"):
        store.register(broken)
    assert store.table_versions()["backup_runs"] == 1
    columns = [r[1] for r in store.db.execute("PRAGMA table_info(backup_runs)")]
    assert columns == ["id", "ts", "name"]  # the ALTER before the failure is rolled back too
    store.close()
    store = Store(tmp_path / "state.db")
    store.register(backup_runs())  # the fixed agent migrates the same file
    assert store.db.execute("SELECT bytes FROM backup_runs").fetchall() == [(1,)]


def test_a_crash_mid_migration_leaves_the_previous_version(tmp_path):
    path = tmp_path / "state.db"
    store = Store(path)
    store.register(backup_runs(1))
    store.db.execute("INSERT INTO backup_runs (ts, name) VALUES (1.0, 'a-1')")
    store.close()
    # A real crash: the process ends in the middle of migration 2, with no rollback.
    crash = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from agent.store import Store, Table
        from tests.unit.test_store import BACKUP_MIGRATIONS

        def half_then_crash(db):
            db.execute("ALTER TABLE backup_runs ADD COLUMN bytes INTEGER")
            db.execute("UPDATE backup_runs SET bytes = 7")
            os._exit(3)

        Store(Path({str(path)!r})).register(
            Table("backup_runs", (BACKUP_MIGRATIONS[0], half_then_crash))
        )
        """
    )
    assert subprocess.run([sys.executable, "-c", crash], timeout=60).returncode == 3
    store = Store(path)
    assert store.table_versions()["backup_runs"] == 1
    assert [r[1] for r in store.db.execute("PRAGMA table_info(backup_runs)")] == [
        "id",
        "ts",
        "name",
    ]
    store.register(backup_runs())
    assert store.db.execute("SELECT name, bytes FROM backup_runs").fetchall() == [("a-1", 1)]


def test_a_registered_table_is_pruned_by_its_retention(tmp_path):
    store = Store(tmp_path / "state.db")
    store.register(backup_runs(max_rows=3))
    for i in range(10):
        store.db.execute("INSERT INTO backup_runs (ts, name) VALUES (?, 'a-1')", (float(i),))
    store.db.execute("CREATE TABLE unregistered (ts REAL)")  # nobody's retention: kept
    store.db.execute("INSERT INTO unregistered VALUES (0.0)")
    store.prune(now=100.0)
    assert [r[0] for r in store.db.execute("SELECT ts FROM backup_runs")] == [7.0, 8.0, 9.0]
    store.retain("backup_runs", Retention(max_age=92.5))  # say, from a reloaded config
    store.prune(now=100.0)
    assert [r[0] for r in store.db.execute("SELECT ts FROM backup_runs")] == [8.0, 9.0]
    assert store.db.execute("SELECT COUNT(*) FROM unregistered").fetchone()[0] == 1
    with pytest.raises(ValueError, match="register it first"):
        store.retain("unregistered", Retention(max_rows=1))


def test_names_that_are_not_identifiers_are_refused():
    with pytest.raises(ValueError, match="not an SQL identifier"):
        Table("runs; DROP TABLE events", ("CREATE TABLE x (y)",))
    with pytest.raises(ValueError, match="not a column name"):
        Retention(max_age=1, age_field="ts OR 1")
