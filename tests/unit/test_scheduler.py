"""The agent's scheduler: runs that fall due close together share one wake-up, and
aligning runs to the tick never loses or delays runs by more than a tick."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta

from agent.scheduler import LoopScheduler, every, in_seconds
from agent.ticks import TICK


async def test_runs_due_within_one_tick_share_a_wake_up():
    loop = asyncio.get_running_loop()
    woke: dict[str, tuple[float, float]] = {}  # job -> (loop time at run, wall time at run)
    done = asyncio.Event()

    async def job(name: str) -> None:
        woke[name] = (loop.time(), time.time())
        if len(woke) == 3:
            done.set()

    scheduler = LoopScheduler()
    scheduler.start()
    try:
        # Three runs due 60 ms apart, all between two ticks (a tick or more from now).
        now = loop.time()
        tick = math.ceil(now / TICK) * TICK + TICK
        start = datetime.now(UTC)
        due = {name: tick - now + off for name, off in (("a", 0.03), ("b", 0.09), ("c", 0.15))}
        for name, after in due.items():
            scheduler.add_job(job, "date", run_date=start + timedelta(seconds=after), args=[name])
        await asyncio.wait_for(done.wait(), 5)
    finally:
        scheduler.shutdown(wait=False)

    # Each on its own, the three would run 50-60 ms apart; together, within a millisecond or
    # so of a tick (20 ms allowed: a busy machine).
    loop_times = sorted(t for t, _ in woke.values())
    assert loop_times[-1] - loop_times[0] < 0.02, f"separate wake-ups: {woke}"
    past_tick = loop_times[0] % TICK
    assert past_tick < 0.02, f"{past_tick:.3f}s after a tick: not woken by the tick"
    for name, after in due.items():
        late = woke[name][1] - (start.timestamp() + after)
        assert 0 <= late < TICK + 0.1, f"{name} ran {late:.3f}s after its time"


async def test_an_interval_at_the_tick_loses_no_runs():
    """Each due time maps to its own tick: a probe every 250 ms still runs 4 times a second."""
    runs: list[float] = []

    async def job() -> None:
        runs.append(time.monotonic())

    scheduler = LoopScheduler()
    scheduler.start()
    try:
        scheduler.add_job(job, every(TICK), next_run_time=in_seconds(0.01))
        deadline = time.monotonic() + 10
        while len(runs) < 13:
            assert time.monotonic() < deadline, f"only {len(runs)} runs in 10 s"
            await asyncio.sleep(0.05)
    finally:
        scheduler.shutdown(wait=False)
    # 12 periods of 250 ms: 3 s; a lost run would make it 3.25 s or more.
    assert runs[12] - runs[0] < 12 * TICK + TICK / 2, runs
