"""APScheduler's asyncio scheduler, with its timer kept inside the event loop.

AsyncIOScheduler's timer callback re-enters the loop through
`call_soon_threadsafe` (made for calls from other threads): each probe run
then costs a self-pipe write, an extra wake-up of the loop and a read. The
agent only touches its scheduler from the loop's own thread, so the timer calls
the scheduling pass directly. On the 2-core benchmark machine that is about a
fifth of the scheduler's cost per run; see benchmarks/RESULTS.md (footprint).
"""

from __future__ import annotations

from apscheduler.schedulers.asyncio import AsyncIOScheduler


class LoopScheduler(AsyncIOScheduler):  # type: ignore[misc]  # untyped library
    def _start_timer(self, wait_seconds: float | None) -> None:
        self._stop_timer()
        if wait_seconds is not None:
            self._timeout = self._eventloop.call_later(wait_seconds, self._wake_in_loop)

    def _wake_in_loop(self) -> None:
        self._stop_timer()
        self._start_timer(self._process_jobs())
