"""A full disk under the agent's state: detection and recovery go on, nothing audited is lost.

Each test mounts a small tmpfs of its own and fills it with a ballast file, so the
kernel answers as a full disk does: ENOSPC, writes cut short part-way through a
record, SQLite's "database or disk is full". Then it frees the ballast and checks
that what was kept in memory reached the disk, in order, with the hash chain intact.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.events import EventLog
from agent.metrics import Metrics
from agent.store import Store
from tests.support.fullfs import SmallFilesystem, small_filesystem

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[SmallFilesystem]:
    with small_filesystem(tmp_path / "small") as fs:
        yield fs


# -- the event log ---------------------------------------------------------------------


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_an_event_the_store_cannot_write_neither_stops_its_caller_nor_is_lost(full_disk, caplog):
    store = Store(full_disk.path / "state.db")
    metrics = Metrics()
    events = EventLog(store, metrics)
    events.emit("agent_started", "info", "started")
    full_disk.fill()
    with caplog.at_level(logging.WARNING, logger="hadeck.events"):
        for n in range(50):  # a storm: every write fails
            events.emit("probe_down", "warning", f"probe p{n} is down", probe=f"p{n}")
        events.emit("service_down", "critical", "service web is down", service="web")
    assert [e.kind for e in store.events()] == ["agent_started"]
    assert sample(metrics, "hadeck_event_write_failures_total") == 51
    # Raised is raised: the count an alert reads goes up even while the store refuses.
    assert sample(metrics, "hadeck_events_total", kind="service_down", severity="critical") == 1
    complaints = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert 1 <= len(complaints) <= 2, [r.getMessage() for r in complaints]

    full_disk.free()
    events.emit("service_up", "info", "service web is up", service="web")
    written = store.events(limit=1000)
    assert [e.kind for e in written] == ["agent_started"] + ["probe_down"] * 50 + [
        "service_down",
        "service_up",
    ]
    assert [e.ts for e in written] == sorted(e.ts for e in written)
    store.close()


async def test_an_event_kept_in_memory_is_written_once_the_disk_frees_without_another(
    full_disk,
):
    store = Store(full_disk.path / "state.db")
    events = EventLog(store, Metrics())
    full_disk.fill()
    events.emit("service_down", "critical", "service web is down", service="web")
    assert store.events() == []
    full_disk.free()
    deadline = time.monotonic() + 15
    while not store.events() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert [e.kind for e in store.events()] == ["service_down"]
    store.close()
