"""APScheduler's asyncio scheduler, with its timer kept inside the event loop.

AsyncIOScheduler's timer callback re-enters the loop through
`call_soon_threadsafe` (made for calls from other threads): each probe run
then costs a self-pipe write, an extra wake-up of the loop and a read. The
agent only touches its scheduler from the loop's own thread, so the timer calls
the scheduling pass directly. On the 2-core benchmark machine that is about a
fifth of the scheduler's cost per run; see benchmarks/RESULTS.md (footprint).

The timer is also aligned to the agent's tick (agent/ticks.py), so runs that
fall due close together share one wake-up of the process.

Scheduling runs in UTC: the local zone only adds conversions to every run (and
a probe interval has nothing to do with the wall clock's zone).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from agent.ticks import next_tick


def every(seconds: float, jitter: float = 0.0) -> IntervalTrigger:
    return IntervalTrigger(seconds=seconds, jitter=jitter or None, timezone=UTC)


def in_seconds(seconds: float = 0.0) -> datetime:
    """A run time `seconds` from now, for a job's first run."""
    return datetime.now(UTC) + timedelta(seconds=seconds)


class LoopScheduler(AsyncIOScheduler):  # type: ignore[misc]  # untyped library
    def __init__(self, **options: object) -> None:
        super().__init__(**{"timezone": UTC, **options})

    def _start_timer(self, wait_seconds: float | None) -> None:
        self._stop_timer()
        if wait_seconds is not None:
            loop = self._eventloop
            self._timeout = loop.call_at(next_tick(loop, wait_seconds), self._wake_in_loop)

    def _wake_in_loop(self) -> None:
        self._stop_timer()
        self._start_timer(self._process_jobs())
