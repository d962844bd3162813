"""The last run of each recorded job, kept in the store so that a schedule survives restarts.

A recorded job (LoopScheduler.add_recorded_job) writes its start (outcome `running`)
and its end: `ok` moves `last_success` to that run's start; `failed` leaves it where
it was and keeps the error as `detail`. A run still `running` when the agent starts
was cut short by a crash or a kill: it becomes `interrupted`.

Catch-up (`missed`): a job that asks for it runs once at start if its trigger fell
due since its last success, or since it was first scheduled if it never succeeded: a
run missed while the agent was down (or a failed one, before a restart) is made up
once, however many fires were missed; how many is reported, so the caller can raise
an event. Meant for jobs minutes apart or more (backups, checks, rollouts): each run
is two small writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.triggers.interval import IntervalTrigger

from agent.store import Store, Table

JOB_RUNS = Table(
    "job_runs",
    (
        """
        CREATE TABLE job_runs (
            job TEXT PRIMARY KEY,
            added REAL NOT NULL,
            last_start REAL,
            last_success REAL,
            outcome TEXT,
            detail TEXT NOT NULL DEFAULT ''
        )
        """,
    ),
)  # No retention: one row per job id ever scheduled.

MAX_COUNTED = 1000
DETAIL_LIMIT = 2000


@dataclass(frozen=True)
class JobRun:
    job: str
    added: float  # first scheduled: a fire before it was not this job's
    last_start: float | None
    last_success: float | None  # the start of the last run that succeeded
    outcome: str | None  # running, ok, failed, interrupted; None before the first run
    detail: str


@dataclass(frozen=True)
class Missed:
    """Runs of `job` that fell due and did not succeed: it runs once, now."""

    job: str
    due: datetime  # the first fire since the last success
    fires: int  # how many fell due since (counted up to MAX_COUNTED)
    last_success: float | None


class JobRuns:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        store.register(JOB_RUNS)
        self.db, self.clock = store.db, clock
        self.db.execute(
            "UPDATE job_runs SET outcome = 'interrupted',"
            " detail = 'the agent stopped during this run' WHERE outcome = 'running'"
        )

    def get(self, job: str) -> JobRun | None:
        row = self.db.execute(
            "SELECT job, added, last_start, last_success, outcome, detail FROM job_runs"
            " WHERE job = ?",
            (job,),
        ).fetchone()
        return None if row is None else JobRun(*row)

    def all(self) -> list[JobRun]:
        rows = self.db.execute(
            "SELECT job, added, last_start, last_success, outcome, detail FROM job_runs"
            " ORDER BY job"
        ).fetchall()
        return [JobRun(*r) for r in rows]

    def scheduled(self, job: str) -> JobRun:
        """The job's record, made the first time it is scheduled."""
        self.db.execute(
            "INSERT OR IGNORE INTO job_runs (job, added) VALUES (?, ?)", (job, self.clock())
        )
        run = self.get(job)
        assert run is not None
        return run

    def started(self, job: str, ts: float) -> None:
        self.db.execute(
            "UPDATE job_runs SET last_start = ?, outcome = 'running', detail = '' WHERE job = ?",
            (ts, job),
        )

    def finished(self, job: str, started: float, outcome: str, detail: str = "") -> None:
        """`ok` moves the last success to `started`; any other outcome leaves it."""
        self.db.execute(
            "UPDATE job_runs SET outcome = ?, detail = ?,"
            " last_success = CASE WHEN ? = 'ok' THEN ? ELSE last_success END WHERE job = ?",
            (outcome, detail[:DETAIL_LIMIT], outcome, started, job),
        )

    def missed(self, job: str, trigger: Any) -> Missed | None:
        """The runs the job missed by now, if any (a job never scheduled before missed none)."""
        run = self.get(job)
        if run is None:
            return None
        since = run.last_success if run.last_success is not None else run.added
        found = missed_fires(
            trigger, datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(self.clock(), UTC)
        )
        if found is None:
            return None
        due, fires = found
        return Missed(job, due, fires, run.last_success)


def missed_fires(trigger: Any, since: datetime, now: datetime) -> tuple[datetime, int] | None:
    """The first fire of `trigger` after `since` and how many up to `now`, or None.

    An interval trigger's fires count from when it was made (each start of the agent),
    so for it a run is missed when a whole interval has passed since `since`; any other
    trigger (cron) is asked for its own fire times."""
    if isinstance(trigger, IntervalTrigger):
        interval: timedelta = trigger.interval
        fires = int((now - since) / interval)
        return (since + interval, min(fires, MAX_COUNTED)) if fires > 0 else None
    # A run starts at or after its fire time: a fire at `since` itself is the one it ran for.
    fire = trigger.get_next_fire_time(None, since + timedelta(microseconds=1))
    first, fires = fire, 0
    while fire is not None and fire <= now and fires < MAX_COUNTED:
        fires += 1
        fire = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
    return (first, fires) if fires else None
