"""The state store keeps history across reopen and stays bounded."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

from agent.store import RESULTS_FLUSH_DELAY, Store


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
    for i in range(200):
        store.add_event(float(i), "k", "info", "m", None, None, {})
        store.add_probe_result("p", float(i), True, 0.1, "ok")
    store.add_attempt("svc", 1.0, "restart", "failed", "x", 0.5)
    store.prune(events_age=150, results_age=50, max_events=100, max_results=1000, now=200.0)
    events = store.events(limit=1000)
    assert len(events) == 100 and events[0].ts == 100.0  # the count bound wins here
    results = store.probe_results("p", limit=1000)
    assert len(results) == 50 and results[0][0] == 150.0  # the age bound wins here
    assert store.attempts("svc") == []


def test_wal_mode(tmp_path):
    store = Store(tmp_path / "state.db")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_probe_results_reach_the_file_soon_and_all_on_close(tmp_path):
    store = Store(tmp_path / "state.db")
    reader = sqlite3.connect(tmp_path / "state.db")

    def on_disk() -> int:
        return int(reader.execute("SELECT COUNT(*) FROM probe_results").fetchone()[0])

    for i in range(30):
        store.add_probe_result("p", float(i), i % 2 == 0, 0.01, "ok")
    deadline = time.monotonic() + RESULTS_FLUSH_DELAY + 5
    while on_disk() < 30:
        assert time.monotonic() < deadline, f"only {on_disk()} of 30 results written"
        await asyncio.sleep(0.05)
    store.add_probe_result("p", 30.0, True, 0.01, "last")
    store.close()  # a clean stop writes what is still buffered
    assert on_disk() == 31
    assert reader.execute("SELECT detail FROM probe_results ORDER BY id DESC").fetchone() == (
        "last",
    )


async def test_results_flush_while_a_prune_runs_in_a_worker_thread(tmp_path):
    # The agent prunes in a worker thread while the loop goes on writing.
    store = Store(tmp_path / "state.db")
    stop = threading.Event()

    def prune_until_stopped() -> int:
        rounds = 0
        while not stop.is_set():
            store.prune(events_age=1e9, results_age=1e9, max_events=10**6, max_results=10**6)
            rounds += 1
        return rounds

    pruner = asyncio.get_running_loop().run_in_executor(None, prune_until_stopped)
    try:
        for _ in range(300):
            store.add_probe_result("p", time.time(), True, 0.01, "ok")  # kept by retention
            store.flush_results()  # from the loop: must not fail while the prune runs
            await asyncio.sleep(0)
    finally:
        stop.set()
        assert await pruner > 0
    store.close()
    reader = sqlite3.connect(tmp_path / "state.db")
    assert reader.execute("SELECT COUNT(*) FROM probe_results").fetchone()[0] == 300
