"""The agent's scheduler on the wall clock: runs that fall due close together share one
wake-up, and aligning runs to the tick never loses a run.

What is asserted is which wake-up ran what, and the loop time each wake-up was set
for (the tick it was aligned to), not how late the machine let it come: a loaded
machine delays wake-ups, and that says nothing about the scheduler."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from datetime import UTC, datetime, timedelta

import pytest

from agent.scheduler import LoopScheduler, every, in_seconds
from agent.ticks import TICK

pytestmark = pytest.mark.integration


class WakeRecordingScheduler(LoopScheduler):
    """The agent's scheduler, noting each wake-up: the loop time it was set for, and when it
    came."""

    def __init__(self) -> None:
        super().__init__()
        self.wakes: list[tuple[float, float]] = []

    def _wake_in_loop(self) -> None:
        self.wakes.append((self._timeout.when(), self._eventloop.time()))
        super()._wake_in_loop()

    @property
    def wake(self) -> int:
        """The wake-up whose scheduling pass started the job now running."""
        return len(self.wakes) - 1


def on_the_tick(loop_time: float) -> bool:
    return abs(loop_time / TICK - round(loop_time / TICK)) < 1e-6


async def test_runs_due_within_one_tick_share_a_wake_up():
    loop = asyncio.get_running_loop()
    scheduler = WakeRecordingScheduler()
    ran: dict[str, tuple[int, float]] = {}  # job -> (its wake-up, wall time at its run)
    done = asyncio.Event()

    async def job(name: str) -> None:
        ran[name] = (scheduler.wake, time.time())
        if len(ran) == 3:
            done.set()

    scheduler.start()
    try:
        # Three runs due 60 ms apart, all between two ticks, a second or so from now.
        now, start = loop.time(), datetime.now(UTC)
        tick = math.ceil(now / TICK) * TICK + 4 * TICK
        due = {name: tick - now + off for name, off in (("a", 0.03), ("b", 0.09), ("c", 0.15))}
        for name, after in due.items():
            scheduler.add_job(job, "date", run_date=start + timedelta(seconds=after), args=[name])
        await asyncio.wait_for(done.wait(), 60)
    finally:
        scheduler.shutdown(wait=False)

    wakes = {wake for wake, _ in ran.values()}
    assert len(wakes) == 1, f"separate wake-ups: {ran}"
    set_for = scheduler.wakes[wakes.pop()][0]
    # The first tick after the last of them, a tick after the one before them all.
    assert on_the_tick(set_for) and set_for == pytest.approx(tick + TICK, abs=1e-6)
    for name, after in due.items():
        assert ran[name][1] >= start.timestamp() + after, f"{name} ran before its time"


async def test_an_interval_at_the_tick_loses_no_runs():
    """Each due time maps to its own tick: a probe every 250 ms still runs 4 times a second.

    Judged over 13 runs in a row whose wake-ups came on time (within half a tick): a
    wake-up that the machine delays by more than a tick may rightly run two due times
    at once, so such a stretch starts the count again."""
    scheduler = WakeRecordingScheduler()
    runs: list[int] = []  # the wake-up of each run

    async def job() -> None:
        runs.append(scheduler.wake)

    def clean_stretch() -> list[int] | None:
        """The last 13 runs, if their wake-ups all came within half a tick."""
        last = runs[-13:]
        if len(last) < 13:
            return None
        if any(came - set_for > TICK / 2 for set_for, came in scheduler.wakes[last[0] :]):
            return None
        # A wake-up recorded as set for a time before the one it follows was not this
        # sequence's timer (seen once in CI: a first run "set for" 11 ticks ahead): the
        # count starts again. A doubled (gap 0) or skipped (gap 2) run still fails below.
        set_for = [scheduler.wakes[w][0] for w in last]
        if any(b < a for a, b in itertools.pairwise(set_for)):
            return None
        return last

    scheduler.start()
    try:
        scheduler.add_job(job, every(TICK), next_run_time=in_seconds(0.01))
        deadline = time.monotonic() + 60
        while (stretch := clean_stretch()) is None:
            assert time.monotonic() < deadline, f"no 13 runs on time in 60 s: {scheduler.wakes}"
            await asyncio.sleep(0.05)
    finally:
        scheduler.shutdown(wait=False)
    set_for = [scheduler.wakes[w][0] for w in stretch]
    assert all(on_the_tick(t) for t in set_for), set_for
    # One run per wake-up, one wake-up per tick: none skipped, none doubled.
    gaps = [round((b - a) / TICK, 6) for a, b in itertools.pairwise(set_for)]
    assert gaps == [1.0] * 12, gaps
