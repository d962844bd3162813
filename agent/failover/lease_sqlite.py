"""Leases in one SQLite file: for several agents on one machine (the demo, tests).

Every operation is one `BEGIN IMMEDIATE` transaction, so compare-and-swap is
atomic across processes. Expiry is on agent/clock.py's boot clock, the clock the
holders keep their deadlines on, never the wall clock: a wall-clock step (NTP,
`date -s`) moves no lease, and a suspend counts for store and holders alike. Each
row carries the boot id it was written in; a row from another boot (the machine
restarted, every holder with it) has expired. The fencing token comes from a
counter row that only grows. Blocking sqlite calls run in a thread, bounded by
the store's timeout.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from agent import clock as boot_clock
from agent.failover.lease import Handover, Leader, LeaseStore, LeaseStoreError, MemberRecord

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS leader (
    grp TEXT PRIMARY KEY, member TEXT NOT NULL, token INTEGER NOT NULL, expires REAL NOT NULL,
    boot TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS tokens (grp TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS members (
    grp TEXT NOT NULL, member TEXT NOT NULL, record TEXT NOT NULL, expires REAL NOT NULL,
    boot TEXT NOT NULL DEFAULT '', PRIMARY KEY (grp, member)
);
CREATE TABLE IF NOT EXISTS flags (
    grp TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (grp, name)
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, grp TEXT NOT NULL, entry TEXT NOT NULL
);
"""


class SqliteLeaseStore(LeaseStore):
    def __init__(
        self,
        path: Path,
        timeout: float = 2.0,
        clock: Callable[[], float] | None = None,
        boot: str | None = None,
    ) -> None:
        """`clock` and `boot`: agent/clock.py's unless given (tests step a fake one)."""
        self.path, self.timeout = path, timeout
        self.clock = clock or boot_clock.now
        self.boot = boot if boot is not None else boot_clock.boot_id()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = asyncio.Lock()
        db = self._connect()
        try:
            db.executescript(SCHEMA)
            for table in ("leader", "members"):  # files from before the boot column
                columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                if "boot" not in columns:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN boot TEXT NOT NULL DEFAULT ''")
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def work() -> T:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(db)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
                return out
            finally:
                db.close()

        try:
            async with self._lock:
                return await asyncio.wait_for(asyncio.to_thread(work), self.timeout + 0.5)
        except (sqlite3.Error, TimeoutError) as exc:
            raise LeaseStoreError(f"sqlite lease store {self.path}: {exc or 'timed out'}") from None

    async def leader(self, group: str) -> Leader | None:
        now = self.clock()

        def q(db: sqlite3.Connection) -> Leader | None:
            row = db.execute(
                "SELECT member, token, expires FROM leader WHERE grp = ? AND expires > ?"
                " AND boot = ?",
                (group, now, self.boot),
            ).fetchone()
            return Leader(group, row[0], row[1], row[2] - now) if row else None

        return await self._run(q)

    async def acquire(self, group: str, member: str, ttl: float) -> Leader | None:
        now = self.clock()

        def q(db: sqlite3.Connection) -> Leader | None:
            db.execute(
                "DELETE FROM leader WHERE grp = ? AND (expires <= ? OR boot != ?)",
                (group, now, self.boot),
            )
            if db.execute("SELECT 1 FROM leader WHERE grp = ?", (group,)).fetchone():
                return None
            db.execute(
                "INSERT INTO tokens (grp, last) VALUES (?, 1) "
                "ON CONFLICT (grp) DO UPDATE SET last = last + 1",
                (group,),
            )
            (token,) = db.execute("SELECT last FROM tokens WHERE grp = ?", (group,)).fetchone()
            db.execute(
                "INSERT INTO leader (grp, member, token, expires, boot) VALUES (?, ?, ?, ?, ?)",
                (group, member, token, now + ttl, self.boot),
            )
            return Leader(group, member, token, ttl)

        return await self._run(q)

    async def renew(self, leader: Leader, ttl: float) -> bool:
        now = self.clock()

        def q(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE leader SET expires = ? WHERE grp = ? AND member = ? AND token = ?"
                " AND expires > ? AND boot = ?",
                (now + ttl, leader.group, leader.member, leader.token, now, self.boot),
            )
            return cur.rowcount == 1

        return await self._run(q)

    async def release(self, leader: Leader) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "DELETE FROM leader WHERE grp = ? AND member = ? AND token = ?",
                (leader.group, leader.member, leader.token),
            )
            return cur.rowcount == 1

        return await self._run(q)

    async def publish(self, group: str, record: MemberRecord, ttl: float) -> None:
        expires = self.clock() + ttl

        def q(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO members (grp, member, record, expires, boot) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (grp, member) DO UPDATE SET record = excluded.record,"
                " expires = excluded.expires, boot = excluded.boot",
                (group, record.member, record.to_json(), expires, self.boot),
            )

        await self._run(q)

    async def members(self, group: str) -> list[MemberRecord]:
        now = self.clock()

        def q(db: sqlite3.Connection) -> list[MemberRecord]:
            rows = db.execute(
                "SELECT record FROM members WHERE grp = ? AND expires > ? AND boot = ?"
                " ORDER BY member",
                (group, now, self.boot),
            ).fetchall()
            return [MemberRecord.from_json(r[0]) for r in rows]

        return await self._run(q)

    async def get_flag(self, group: str, name: str) -> str | None:
        def q(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "SELECT value FROM flags WHERE grp = ? AND name = ?", (group, name)
            ).fetchone()
            return str(row[0]) if row else None

        return await self._run(q)

    async def set_flag(self, group: str, name: str, value: str | None) -> None:
        def q(db: sqlite3.Connection) -> None:
            if value is None:
                db.execute("DELETE FROM flags WHERE grp = ? AND name = ?", (group, name))
            else:
                db.execute(
                    "INSERT INTO flags (grp, name, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (grp, name) DO UPDATE SET value = excluded.value",
                    (group, name, value),
                )

        await self._run(q)

    async def add_history(self, entry: Handover) -> None:
        def q(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO history (grp, entry) VALUES (?, ?)", (entry.group, entry.to_json())
            )

        await self._run(q)

    async def history(self, group: str, limit: int = 50) -> list[Handover]:
        def q(db: sqlite3.Connection) -> list[Handover]:
            rows = db.execute(
                "SELECT entry FROM history WHERE grp = ? ORDER BY id DESC LIMIT ?", (group, limit)
            ).fetchall()
            return [Handover.from_json(r[0]) for r in rows]

        return await self._run(q)

    async def close(self) -> None:
        pass
