"""The agent's HTTP listeners: sockets bound by the agent, served by uvicorn on its loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp

from agent.ticks import next_tick


class StartupError(Exception):
    """The agent cannot start; the message says what to fix."""


class Server(uvicorn.Server):
    """uvicorn without its own signal handling (the agent owns SIGTERM and SIGHUP) and
    without its 10-per-second housekeeping tick: an idle agent should sleep. The tick's
    work (the Date header, once a second) runs once a second, on the agent's tick
    (agent/ticks.py) to share a wake-up with probe runs; `exit` ends it at once."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def main_loop(self) -> None:
        while not await self.on_tick(0):  # tick 0: the once-a-second work, every time
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(next_tick(asyncio.get_running_loop(), 1.0)):
                    await self._exit.wait()

    def exit(self) -> None:
        self.should_exit = True
        self._exit.set()


def bind(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {address}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def server_for(app: ASGIApp) -> Server:
    return Server(
        uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            http="h11",  # what is installed, said: no probing for optional parsers
            ws="none",  # no websocket routes
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    )
