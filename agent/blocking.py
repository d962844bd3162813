"""Off-loop calls that can block in the kernel: the probes' stat, statvfs and /proc
reads, and the sampling of host resources.

A dead NFS mount or a dying disk can block `stat()` for minutes, and the thread
running it can neither be cancelled nor interrupted. So each caller (one per
probe) has at most one such call in flight: while the previous one has not
returned, a new call fails at once and says how long it has waited, instead of
stranding one more thread per run. The calls run on daemon threads of their own
pool, never asyncio's default executor: a hung filesystem cannot starve healthy
probes, pruning or config reloads of threads, and a thread stuck in the kernel
does not keep the agent from exiting on SIGTERM (a ThreadPoolExecutor joins its
threads at exit).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class StillBlocked(Exception):
    """The previous call has not come back: report it, do not pile up behind it."""

    def __init__(self, waited: float) -> None:
        super().__init__(
            f"the previous check has not returned after {waited:.0f}s "
            "(a hung filesystem or /proc?); not starting another"
        )


class _Pool:
    """Daemon threads, started when no thread is idle and kept for the next calls.

    A thread counts as idle only while it waits for work, so a call is never queued
    behind one stuck in the kernel.
    """

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                threading.Thread(target=self._serve, name="hadeck-blocking", daemon=True).start()
        self._work.put((future, fn))
        return future

    def _serve(self) -> None:
        while True:
            future, fn = self._work.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)
            del future, fn  # the result belongs to its caller, not to an idle thread
            with self._lock:
                self._idle += 1


_POOL = _Pool()


class Blocking:
    """One caller's blocking calls: one at a time, on the pool."""

    def __init__(self) -> None:
        self._pending: Future[Any] | None = None
        self._since = 0.0

    async def call(self, fn: Callable[[], T]) -> T:
        if self._pending is not None and not self._pending.done():
            raise StillBlocked(time.monotonic() - self._since)
        self._since = time.monotonic()
        future = self._pending = _POOL.submit(fn)
        return await asyncio.wrap_future(future)
