"""Cron expressions and recorded jobs: what a subsystem's schedule relies on.

Recorded runs use a real SQLite file and a clock the test sets; the tick-aligned
timer itself is tested against the wall clock in tests/integration/test_scheduler_ticks.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from agent.config import Schedule as ConfigSchedule
from agent.cron import Cron
from agent.cron import trigger as cron
from agent.events import EventLog
from agent.job_runs import JobRuns
from agent.metrics import Metrics
from agent.scheduler import LoopScheduler, every
from agent.store import Store
from agent.subsystem import Job, JobSet, scheduled

# -- cron expressions ---------------------------------------------------------------------


class Schedule(BaseModel):
    """A config section as a subsystem would write it."""

    schedule: Cron


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


WEDNESDAY_NOON = utc("2024-05-01 12:00:30")


@pytest.mark.parametrize(
    ("expr", "next_fire"),
    [
        ("0 3 * * *", "2024-05-02 03:00"),
        ("  0   3 * *  *\n", "2024-05-02 03:00"),
        ("*/15 9-17 * * mon-fri", "2024-05-01 12:15"),
        ("0 0 * * sun", "2024-05-05 00:00"),
        ("0 0 * * SAT,sun", "2024-05-04 00:00"),
        ("30 4 1,15 * *", "2024-05-15 04:30"),
        ("0 0 1 jan *", "2025-01-01 00:00"),
        ("0 0 last * *", "2024-05-31 00:00"),
        ("@daily", "2024-05-02 00:00"),
        ("@weekly", "2024-05-05 00:00"),
        ("@monthly", "2024-06-01 00:00"),
        ("@hourly", "2024-05-01 13:00"),
    ],
)
def test_cron_expressions_fire_in_utc_whatever_the_zone_of_the_clock(expr, next_fire):
    assert Schedule(schedule=expr).schedule == " ".join(expr.split())
    assert cron(expr).get_next_fire_time(None, WEDNESDAY_NOON) == utc(next_fire)
    elsewhere = WEDNESDAY_NOON.astimezone(timezone(timedelta(hours=-7)))  # the same instant
    assert cron(expr).get_next_fire_time(None, elsewhere) == utc(next_fire)


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("0 3 * * 1", "day of week '1': write days by name"),
        ("0 3 * * 0-4", "counts 0 as Sunday"),
        ("0 3 * * 7", "write days by name"),
        ("0 3 * * */2", "day of week '*/2'"),
        ("0 3 * * mon-fri/2", "ignores steps here"),
        ("0 3 * * mon,funday", "day of week 'funday'"),
        ("0 0 1 * mon", "not both"),
        ("61 * * * *", "the last value (61) is higher than the maximum value (59)"),
        ("x * * * *", 'for field "minute"'),
        ("0 3 * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"),
        ("0 3 * * * *", "got 6"),
        ("", "got 0"),
        ("@reboot", "not one of @hourly"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
        ("0 3 * * *\x00", "control characters"),
        ("0 3\x1b[2J * * *", "control characters"),
        ("1," * 200 + "1 * * * *", "at most 256 characters"),
    ],
)
def test_a_bad_cron_expression_is_refused_saying_why(expr, says):
    with pytest.raises(ValidationError) as refused:
        Schedule(schedule=expr)
    [error] = refused.value.errors()
    assert error["loc"] == ("schedule",)
    assert says in error["msg"]
    assert error["msg"].isprintable()  # never a raw control character to a terminal


def test_the_cron_trigger_is_loaded_only_when_an_expression_is_used():
    # agent.daemon is the agent's whole start-up path, config included.
    code = (
        "import sys, agent.daemon, agent.cron, agent.job_runs\n"
        "print('apscheduler.triggers.cron' in sys.modules)\n"
        "agent.cron.check('0 3 * * *')\n"
        "print('apscheduler.triggers.cron' in sys.modules)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert run.stdout.split() == ["False", "True"]


# -- recorded jobs --------------------------------------------------------------------------


class Clock:
    """The time as the test sets it."""

    def __init__(self, now: str) -> None:
        self.now = utc(now).timestamp()

    def set(self, now: str) -> None:
        self.now = utc(now).timestamp()

    def __call__(self) -> float:
        return self.now


NIGHTLY = "0 3 * * *"


async def nothing() -> None:
    pass


async def test_a_success_moves_the_last_success_and_a_failure_does_not(tmp_path):
    path = tmp_path / "state.db"
    clock = Clock("2024-05-01 12:00")
    scheduler = LoopScheduler(job_runs=JobRuns(Store(path), clock))
    failing: list[str] = []

    async def backup() -> None:
        if failing:
            raise RuntimeError(failing[0])

    scheduler.add_recorded_job("backup:nightly", backup, cron(NIGHTLY))
    run = scheduler.get_job("backup:nightly").func  # what the scheduler calls at each fire
    clock.set("2024-05-02 03:00:01")
    await run()
    clock.set("2024-05-03 03:00:01")
    failing.append("repository is locked")
    await run()

    record = JobRuns(Store(path), clock).get("backup:nightly")  # as the next start reads it
    assert record is not None
    assert record.last_start == utc("2024-05-03 03:00:01").timestamp()
    assert record.last_success == utc("2024-05-02 03:00:01").timestamp()
    assert (record.outcome, record.detail) == ("failed", "RuntimeError: repository is locked")
    assert record.added == utc("2024-05-01 12:00").timestamp()


async def test_a_run_cut_short_by_the_agent_stopping_is_interrupted_at_the_next_start(tmp_path):
    path = tmp_path / "state.db"
    clock = Clock("2024-05-02 03:00:01")
    store = Store(path)
    scheduler = LoopScheduler(job_runs=JobRuns(store, clock))
    started = asyncio.Event()

    async def backup() -> None:
        started.set()
        await asyncio.Event().wait()  # still going when the agent is killed

    scheduler.add_recorded_job("backup:nightly", backup, cron(NIGHTLY))
    task = asyncio.ensure_future(scheduler.get_job("backup:nightly").func())
    await asyncio.wait_for(started.wait(), 10)
    store.db.close()  # killed: nothing more is written
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    record = JobRuns(Store(path), clock).get("backup:nightly")
    assert record is not None
    assert (record.outcome, record.last_success) == ("interrupted", None)


def _history(path: Path, clock: Clock, job: str, added: str, runs: list[tuple[str, str]]) -> None:
    """A job's earlier life: first scheduled at `added`, then runs (start, outcome)."""
    store = Store(path)
    record = JobRuns(store, clock)
    clock.set(added)
    record.scheduled(job)
    for start, outcome in runs:
        record.started(job, utc(start).timestamp())
        record.finished(job, utc(start).timestamp(), outcome)
    store.close()


@pytest.mark.parametrize(
    ("trigger", "runs", "due", "fires"),
    [
        # It ran at its last fire, or at the fire itself: nothing missed.
        (NIGHTLY, [("2024-05-01 03:00:00.4", "ok")], None, 0),
        (NIGHTLY, [("2024-05-01 03:00", "ok")], None, 0),
        # Down from the 28th to now: three fires missed, run once.
        (NIGHTLY, [("2024-04-28 03:00:05", "ok")], "2024-04-29 03:00", 3),
        # The last two runs failed: the last success is what counts.
        (
            NIGHTLY,
            [
                ("2024-04-29 03:00:05", "ok"),
                ("2024-04-30 03:00:05", "failed"),
                ("2024-05-01 03:00:05", "failed"),
            ],
            "2024-04-30 03:00",
            2,
        ),
        # Never succeeded: counted from when it was first scheduled.
        (NIGHTLY, [], "2024-04-20 03:00", 12),
        (NIGHTLY, [("2024-04-20 03:00:01", "failed")], "2024-04-20 03:00", 12),
        # An interval: a whole one has passed since the last success.
        (every(6 * 3600), [("2024-05-01 03:00", "ok")], "2024-05-01 09:00", 1),
        (every(6 * 3600), [("2024-05-01 07:00", "ok")], None, 0),
    ],
)
def test_catch_up_runs_what_fell_due_since_the_last_success(tmp_path, trigger, runs, due, fires):
    path = tmp_path / "state.db"
    clock = Clock("2024-04-20 00:00")
    _history(path, clock, "job", "2024-04-20 00:00", runs)
    clock.set("2024-05-01 12:00")  # the agent starts again
    scheduler = LoopScheduler(job_runs=JobRuns(Store(path), clock))
    trigger = cron(trigger) if isinstance(trigger, str) else trigger
    missed = scheduler.add_recorded_job("job", nothing, trigger, catch_up=True)
    if due is None:
        assert missed is None
    else:
        assert missed is not None
        assert (missed.job, missed.due, missed.fires) == ("job", utc(due), fires)
        ok = [start for start, outcome in runs if outcome == "ok"]
        assert missed.last_success == (utc(ok[-1]).timestamp() if ok else None)


async def test_a_job_is_not_behind_before_its_first_fire_nor_without_catch_up(tmp_path):
    path = tmp_path / "state.db"
    clock = Clock("2024-05-01 04:00")
    scheduler = LoopScheduler(job_runs=JobRuns(Store(path), clock))
    scheduler.start(paused=True)
    try:
        assert scheduler.add_recorded_job("new", nothing, cron(NIGHTLY), catch_up=True) is None
        _history(path, clock, "old", "2024-04-01 00:00", [("2024-04-02 03:00", "ok")])
        clock.set("2024-05-01 12:00")
        assert scheduler.add_recorded_job("old", nothing, cron(NIGHTLY)) is None
        assert scheduler.add_recorded_job("old", nothing, cron(NIGHTLY), catch_up=True)
        assert sorted(j.id for j in scheduler.get_jobs()) == ["new", "old"]  # added again
    finally:
        scheduler.shutdown(wait=False)


async def test_a_missed_run_runs_once_at_start_then_the_job_keeps_its_schedule(tmp_path):
    # The real scheduler and the wall clock: the last success was two days ago.
    path = tmp_path / "state.db"
    two_days_ago = time.time() - 2 * 86400
    store = Store(path)
    earlier = JobRuns(store)
    earlier.scheduled("backup:nightly")
    earlier.started("backup:nightly", two_days_ago)
    earlier.finished("backup:nightly", two_days_ago, "ok")
    store.close()

    runs = JobRuns(Store(path))
    scheduler = LoopScheduler(job_runs=runs)
    scheduler.start()
    ran: list[float] = []

    async def backup() -> None:
        ran.append(time.time())

    try:
        missed = scheduler.add_recorded_job("backup:nightly", backup, cron(NIGHTLY), catch_up=True)
        assert missed is not None and missed.fires == 2  # two 03:00s in two days
        deadline = time.monotonic() + 30
        while (r := runs.get("backup:nightly")) is None or r.last_success == two_days_ago:
            assert time.monotonic() < deadline, f"no catch-up run within 30 s: {r}"
            await asyncio.sleep(0.02)
        assert len(ran) == 1 and r.outcome == "ok"
        # Once, not once per missed fire: next is the schedule's own next 03:00.
        next_run = scheduler.get_job("backup:nightly").next_run_time
        assert next_run == cron(NIGHTLY).get_next_fire_time(None, datetime.now(UTC))
    finally:
        scheduler.shutdown(wait=False)


# -- a subsystem's configured schedule ----------------------------------------------------


async def test_a_subsystems_recorded_job_makes_up_a_missed_run_and_says_so(tmp_path):
    """What a backup set's schedule will do: `Schedule` from the config, a recorded job in
    the subsystem's JobSet, the store's last success from before the agent's restart."""
    path = tmp_path / "state.db"
    store = Store(path)
    earlier = JobRuns(store)
    three_days_ago = time.time() - 3 * 86400
    earlier.scheduled("backups:nightly")
    earlier.started("backups:nightly", three_days_ago)
    earlier.finished("backups:nightly", three_days_ago, "ok")

    schedule = ConfigSchedule.model_validate({"cron": "0  3 * * *"})
    assert schedule.describe() == "cron 0 3 * * * UTC"
    events = EventLog(store, Metrics())
    scheduler = LoopScheduler(job_runs=JobRuns(store))
    scheduler.start()
    ran: list[float] = []

    async def backup() -> None:
        ran.append(time.time())

    try:
        jobs = JobSet(scheduler, "backups", events)
        timing = scheduled("backups.sets.nightly.schedule", schedule)
        jobs.replace([Job("nightly", backup, timing, recorded=True, catch_up=schedule.catch_up)])
        missed = [e for e in store.events(limit=10) if e.kind == "job_missed"]
        assert len(missed) == 1 and missed[0].evidence["fires"] == 3, missed
        assert "backups:nightly missed 3 run(s)" in missed[0].message
        deadline = time.monotonic() + 30
        while not ran:
            assert time.monotonic() < deadline, "the missed run did not run within 30 s"
            await asyncio.sleep(0.02)
        while (r := scheduler.job_runs.get("backups:nightly")).outcome != "ok":
            assert time.monotonic() < deadline, f"the run was not recorded: {r}"
            await asyncio.sleep(0.02)
        assert r.last_success is not None and r.last_success > three_days_ago
        # A reload places the job again: nothing was missed meanwhile, and catch-up is for
        # what fell due while the agent was down, so no second run and no second event.
        # (Even when the last success is old again, as after failed runs.)
        store.db.execute(
            "UPDATE job_runs SET last_success = ? WHERE job = 'backups:nightly'", (three_days_ago,)
        )
        jobs.replace([Job("nightly", backup, timing, recorded=True, catch_up=schedule.catch_up)])
        # Not brought forward: next is the schedule's own next 03:00, not now.
        next_run = scheduler.get_job("backups:nightly").next_run_time
        assert next_run == cron("0 3 * * *").get_next_fire_time(None, datetime.now(UTC))
        assert len(ran) == 1
        assert len([e for e in store.events(limit=10) if e.kind == "job_missed"]) == 1
        jobs.clear()
        assert scheduler.get_job("backups:nightly") is None
    finally:
        scheduler.shutdown(wait=False)


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({}, "give exactly one of `every` or `cron`"),
        ({"every": "1h", "cron": "@daily"}, "give exactly one of `every` or `cron`"),
        ({"cron": "61 * * * *"}, "cron expression '61 * * * *'"),
        ({"every": "0s"}, "greater than 0"),
        ({"every": "400d"}, "at most 365d"),
    ],
)
def test_a_schedule_is_one_of_every_or_cron(given, says):
    with pytest.raises(ValidationError) as err:
        ConfigSchedule.model_validate(given)
    assert says in str(err.value)
