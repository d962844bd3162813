"""Probe results in the store: supervision's `probe_results` table, written in batches.

Results are the one buffered write of the agent: they are kept for up to
RESULTS_FLUSH_DELAY (on the agent's tick, agent/ticks.py, so the write shares a
wake-up with probe runs) and written together in one transaction. At dozens of
probe runs a second, one commit per result was a tenth of the agent's CPU; a
crash loses at most the last second and a quarter of results, never an event or
an attempt. What a full disk refuses is kept in memory (RESULTS_KEPT) and
written once it takes writes again; the history reads those too.

The table is the store's schema version 1 in every database made so far; this
module registers it (agent/store.py `Table`), which adopts the table as it is.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time

from agent.store import Retention, Store, Table
from agent.ticks import next_tick

log = logging.getLogger("hadeck.store")

PROBE_RESULTS = Table(
    "probe_results",
    (
        # 1: as the store's schema version 1 made it (so an existing table is adopted).
        """
CREATE TABLE IF NOT EXISTS probe_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    probe TEXT NOT NULL,
    ts REAL NOT NULL,
    ok INTEGER NOT NULL,
    latency REAL NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS probe_results_probe_ts ON probe_results (probe, ts);
""",
    ),
)

RESULTS_FLUSH_DELAY = 1.0
#: Results the disk refused, kept in memory (oldest dropped beyond this) until it takes
#: writes again: about 10 minutes of 50 probes every 5 s.
RESULTS_KEPT = 6000
#: A refused flush is logged at most this often.
COMPLAIN_EVERY = 60.0

_Row = tuple[str, float, int, float, str]


class ProbeResults:
    def __init__(self, store: Store) -> None:
        store.register(PROBE_RESULTS)
        store.before_close(self.flush)
        self.store = store
        self._rows: list[_Row] = []
        self._flush: asyncio.TimerHandle | None = None
        self._complained_at = -COMPLAIN_EVERY

    def retain(self, max_age: float, max_rows: int) -> None:
        self.store.retain(PROBE_RESULTS.name, Retention(max_age, max_rows))

    def add(self, probe: str, ts: float, ok: bool, latency: float, detail: str) -> None:
        """Buffered (see the module's doc); outside an event loop, written at once."""
        self._rows.append((probe, ts, int(ok), latency, detail))
        if self._flush is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush = loop.call_at(next_tick(loop, RESULTS_FLUSH_DELAY), self.flush)

    @property
    def flush_pending(self) -> bool:
        return self._flush is not None

    def flush(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        db = self.store.db
        try:
            with db:
                db.execute("BEGIN")
                db.executemany(
                    "INSERT INTO probe_results (probe, ts, ok, latency, detail)"
                    " VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
        except sqlite3.Error as exc:
            # Called from a loop callback too: never raise there. A full or failing disk
            # keeps the rows for the next flush (the next result arms one); detection goes
            # on from memory either way.
            self._rows = (rows + self._rows)[-RESULTS_KEPT:]
            now = time.monotonic()
            if now - self._complained_at >= COMPLAIN_EVERY:
                self._complained_at = now
                log.warning(
                    "cannot write probe results to %s: %s; %d kept in memory until it can",
                    self.store.path,
                    exc,
                    len(self._rows),
                )

    def recent(self, probe: str, limit: int = 50) -> list[tuple[float, bool, float, str]]:
        """The newest `limit` results of `probe`, oldest first, those still in memory too."""
        self.flush()
        rows = self.store.db.execute(
            "SELECT ts, ok, latency, detail FROM probe_results WHERE probe = ?"
            " ORDER BY id DESC LIMIT ?",
            (probe, limit),
        ).fetchall()
        pending = [(ts, ok, lat, d) for p, ts, ok, lat, d in self._rows if p == probe]
        return [(ts, bool(ok), lat, d) for ts, ok, lat, d in [*reversed(rows), *pending]][-limit:]
