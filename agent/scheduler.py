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
a probe interval has nothing to do with the wall clock's zone). Cron expressions
are in UTC too (agent/cron.py says why).

Recorded jobs (`add_recorded_job`) keep their last run and last success in the
store (agent/job_runs.py), so a job can ask to be run at start when a run fell due
while the agent was down; docs/store.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from agent.ticks import next_tick

if TYPE_CHECKING:
    from agent.job_runs import JobRuns, Missed

log = logging.getLogger("hadeck.scheduler")


def every(seconds: float, jitter: float = 0.0) -> IntervalTrigger:
    return IntervalTrigger(seconds=seconds, jitter=jitter or None, timezone=UTC)


def in_seconds(seconds: float = 0.0) -> datetime:
    """A run time `seconds` from now, for a job's first run."""
    return datetime.now(UTC) + timedelta(seconds=seconds)


class LoopScheduler(AsyncIOScheduler):  # type: ignore[misc]  # untyped library
    def __init__(self, job_runs: JobRuns | None = None, **options: object) -> None:
        super().__init__(**{"timezone": UTC, **options})
        self.job_runs = job_runs

    def add_recorded_job(
        self,
        job_id: str,
        func: Callable[[], Awaitable[object]],
        trigger: Any,
        *,
        catch_up: bool = False,
        **options: Any,
    ) -> Missed | None:
        """Schedules `func` (a coroutine function) with its runs recorded in the store.

        A run that returns is a success; one that raises is a failure (logged in one line,
        its error kept as the run's detail) and does not move the last success. With
        `catch_up`, a job whose trigger fell due since its last success runs once at once,
        and the Missed it returns says what was missed (for the caller's event); None when
        nothing was. Adding the job again (a reload) replaces it. Unless `options` say
        otherwise, one run at a time, and a run late because the loop was busy still runs."""
        runs = self.job_runs
        if runs is None:
            raise RuntimeError("recorded jobs need LoopScheduler(job_runs=JobRuns(store))")
        runs.scheduled(job_id)
        missed = runs.missed(job_id, trigger) if catch_up else None

        async def run() -> None:
            started = runs.clock()
            with _unrecorded(job_id):
                runs.started(job_id, started)
            try:
                await func()
            except asyncio.CancelledError:
                with _unrecorded(job_id):
                    runs.finished(job_id, started, "interrupted", "cancelled")
                raise
            except Exception as exc:
                detail = f"{type(exc).__name__}: {exc}"
                log.warning("job %s failed: %s", job_id, detail)
                with _unrecorded(job_id):
                    runs.finished(job_id, started, "failed", detail)
                return
            with _unrecorded(job_id):
                runs.finished(job_id, started, "ok")

        options = {
            "name": job_id,
            "max_instances": 1,
            "coalesce": True,
            "misfire_grace_time": None,
            **options,
        }
        if missed is not None:
            options["next_run_time"] = in_seconds(0)
        self.add_job(run, trigger, id=job_id, replace_existing=True, **options)
        return missed

    def _start_timer(self, wait_seconds: float | None) -> None:
        self._stop_timer()
        if wait_seconds is not None:
            loop = self._eventloop
            self._timeout = loop.call_at(next_tick(loop, wait_seconds), self._wake_in_loop)

    def _wake_in_loop(self) -> None:
        self._stop_timer()
        self._start_timer(self._process_jobs())


@contextlib.contextmanager
def _unrecorded(job_id: str) -> Iterator[None]:
    """A run goes on when the store cannot record it (a full disk): at worst it runs
    again at the next start."""
    try:
        yield
    except sqlite3.Error as exc:
        log.warning("job %s: its run is not recorded in the store: %s", job_id, exc)
