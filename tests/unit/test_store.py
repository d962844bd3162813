"""The state store keeps history across reopen and stays bounded."""

from __future__ import annotations

from agent.store import Store


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
