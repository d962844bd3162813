"""Polls every host's agent without ever blocking the UI or letting one host slow another.

Each host has its own loop: fetch, hand the result to the UI thread, wait the
interval, again. The next poll starts only when the last one finished, so
polls never pile up behind a slow host. The blocking transport calls run in a
bounded thread pool (`polling.concurrency`), so a thousand dead hosts cannot
spawn a thousand threads. No Textual here: the app runs `run()` in a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from agent.schema import Event, HostStatus
from console.agent_client import AgentClient
from console.transport import TransportError


@dataclass(frozen=True)
class Polled:
    host: str
    at: float
    status: HostStatus | None = None
    events: list[Event] | None = None
    error: str | None = None


class FleetPoller:
    def __init__(
        self,
        clients: dict[str, AgentClient],
        interval: float,
        concurrency: int,
        deliver: Callable[[Polled], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clients = clients
        self.interval = interval
        self.deliver = deliver
        self.clock = clock
        self.cursors: dict[str, int | None] = dict.fromkeys(clients)
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="poll")
        self._wake: dict[str, asyncio.Event] = {}
        #: The host whose screen is open gets full answers (sparklines); the rest slim ones.
        self.detail: str | None = None

    def fetch(self, host: str) -> Polled:
        """Blocking: one status and the events since the last seen one."""
        client = self.clients[host]
        try:
            status = client.status(recent=20 if host == self.detail else 0)
            cursor = self.cursors[host]
            events = client.events(since=cursor, limit=200 if cursor is not None else 50)
        except TransportError as exc:
            return Polled(host, self.clock(), error=str(exc))
        except Exception as exc:  # a bug must show on the row, not kill the host's loop
            return Polled(host, self.clock(), error=f"{type(exc).__name__}: {exc}")
        if events:
            self.cursors[host] = events[-1].id
        return Polled(host, self.clock(), status=status, events=events)

    def poll_now(self, host: str | None = None) -> None:
        """Cut the wait short (after an action, or on the operator's refresh key)."""
        for name, wake in self._wake.items():
            if host is None or name == host:
                wake.set()

    async def _host_loop(self, host: str) -> None:
        loop = asyncio.get_running_loop()
        wake = self._wake[host] = asyncio.Event()
        while True:
            result = await loop.run_in_executor(self.pool, self.fetch, host)
            self.deliver(result)
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.interval)

    async def run(self) -> None:
        try:
            await asyncio.gather(*(self._host_loop(h) for h in self.clients))
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)
