"""The agent's HTTP listeners: sockets bound by the agent, served by uvicorn on its loop.

A listener may face the network, and whatever connects to it must not take what the
agent's real work needs: file descriptors for probes, commands, the store and the
loopback API. So each listener holds at most `limit` connections, counted from accept
to close and sized from the process's descriptor limit with a reserve kept free for
everything else. A connection over the limit takes the place of the oldest idle one
(no request in progress), so a flood of silent connections cannot lock out Prometheus
or HAProxy; when every connection is busy a newcomer gets a 503 and is closed. A
request must arrive in full within `REQUEST_TIMEOUT` of the connection or of the
previous answer (uvicorn alone waits for ever for a client that sends nothing, or
one byte a minute). Accept errors and the server's own warnings are logged at most
once a minute per message, not once per attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import resource
import socket
import time
import weakref
from collections.abc import Generator

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from agent.ticks import next_tick

log = logging.getLogger("hadeck.api")

#: The soft RLIMIT_NOFILE the agent raises itself to, when the hard limit allows: what
#: two listeners and the reserve need, and no more (commands the agent runs inherit it,
#: and some programs loop over every descriptor the limit allows).
FD_TARGET = 8192
#: Connections per listener at most, whatever the descriptor limit allows.
MAX_CONNECTIONS = 256
#: Connections accepted beyond the limit while the idle ones they replace are closing.
SLACK = 16
#: Seconds an aborted connection may take to close before the cap stops waiting for it.
CLOSING_WAIT = 1.0
#: Seconds for a whole request (line, headers, body) to arrive.
REQUEST_TIMEOUT = 10.0
#: Seconds between two log lines with the same message.
LOG_INTERVAL = 60.0
LISTEN_BACKLOG = 128
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_BUSY_BODY = b'{"error":"too many connections to this listener","detail":null}'
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class StartupError(Exception):
    """The agent cannot start; the message says what to fix."""


# -- descriptors -------------------------------------------------------------------


@functools.cache
def connection_limit() -> int:
    """Connections per listener: half of what the descriptor limit leaves after a reserve
    (a quarter of the limit, at least 128) for probes, commands, the store and the audit
    log. The soft limit is raised towards the hard one first, once per process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = FD_TARGET if hard == resource.RLIM_INFINITY else min(hard, FD_TARGET)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
    if soft == resource.RLIM_INFINITY:
        soft = FD_TARGET
    reserve = max(128, soft // 4)
    return max(8, min(MAX_CONNECTIONS, (soft - reserve) // 2 - SLACK))


class ConnectionCap:
    """The open connections of one listener, and which of them are idle (oldest first).

    A replaced connection is aborted at once, but its descriptor is only freed on the
    loop's next turn: until then it is `closing`, not counted against the limit. And an
    accepted connection is only known idle once asyncio has made its transport, a turn
    or two later: until then it is `starting`. A burst of newcomers larger than the
    slack waits in the kernel's backlog while either kind is in flight (`must_wait`)
    instead of being refused while there are idle connections to replace."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.idle: dict[GuardedH11Protocol, None] = {}
        # Descriptor -> when: aborted and not yet closed; accepted and not yet made.
        self.closing: dict[int, float] = {}
        self.starting: dict[int, float] = {}

    def admit(self, fd: int) -> bool:
        if self.open - len(self.closing) >= self.limit and self.idle:
            oldest = next(iter(self.idle))
            del self.idle[oldest]
            sock = oldest.transport.get_extra_info("socket")
            if sock is not None:
                self.closing[sock.fileno()] = time.monotonic()
            oldest.transport.abort()  # its descriptor is freed on the loop's next turn
        # Beyond the slack only while replaced ones are closing (accept stops there, see
        # must_wait): the descriptors in use stay under limit + 2 x SLACK.
        if self.open >= self.limit + SLACK * (2 if self.closing else 1):
            return False
        self.open += 1
        self.starting[fd] = time.monotonic()
        return True

    def started(self, fd: int) -> None:
        self.starting.pop(fd, None)

    def must_wait(self) -> bool:
        """At the slack with connections in flight: accept on a later turn."""
        if self.open < self.limit + SLACK:
            return False
        stale = time.monotonic() - CLOSING_WAIT
        for pending in (self.closing, self.starting):
            for fd in [fd for fd, at in pending.items() if at < stale]:
                del pending[fd]  # not seen to close or start in time: stop waiting
        return bool(self.closing or self.starting)

    def release(self, fd: int) -> None:
        self.open -= 1
        self.closing.pop(fd, None)
        self.starting.pop(fd, None)


class _Connection(socket.socket):
    """An accepted socket that gives its place back to the cap when it is closed."""

    def __init__(self, family: int, kind: int, proto: int, fd: int, cap: ConnectionCap) -> None:
        super().__init__(family, kind, proto, fd)
        self._release = weakref.finalize(self, cap.release, fd)  # also if never closed

    def close(self) -> None:
        super().close()
        self._release()


class Listener(socket.socket):
    """A listening socket whose accept keeps to its cap, and backs off on EMFILE.

    asyncio calls `accept` in a loop until it would block; on a resource error it logs,
    stops reading the socket and retries a second later, but (CPython 3.11) it goes on
    calling accept in the same loop, once per backlog slot, each failure logged with its
    traceback and each scheduling one more retry. After the first such error this
    socket reports "would block" until the retry is due."""

    cap: ConnectionCap
    _resting_until = 0.0

    def accept(self) -> tuple[socket.socket, object]:
        if time.monotonic() < self._resting_until:
            raise BlockingIOError
        while True:
            if self.cap.must_wait():
                raise BlockingIOError  # the loop comes back once they have closed
            try:
                fd, addr = self._accept()  # type: ignore[attr-defined]
            except OSError as exc:
                if exc.errno in RESOURCE_ERRNOS:
                    self._resting_until = time.monotonic() + 1.0
                raise
            if self.cap.admit(fd):
                return _Connection(self.family, self.type, self.proto, fd, self.cap), addr
            refused = socket.socket(self.family, self.type, self.proto, fd)
            with contextlib.suppress(OSError):
                refused.setblocking(False)
                refused.send(BUSY)
            refused.close()
            log.warning(
                "listener %s: %d connections open, all busy (%d idle, %d closing, %d starting):"
                " refusing new ones",
                _name(self),
                self.cap.open,
                len(self.cap.idle),
                len(self.cap.closing),
                len(self.cap.starting),
            )


def _name(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(address: str) -> Listener:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = Listener(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {address}: {exc.strerror}") from None
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    sock.cap = ConnectionCap(connection_limit())
    return sock


# -- connections -------------------------------------------------------------------


class _State(ServerState):
    cap: ConnectionCap | None = None


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 connection with a deadline for each request to arrive, and its
    idle time known to the listener's cap."""

    _deadline: asyncio.TimerHandle | None = None
    _cap: ConnectionCap | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        state = self.server_state
        self._cap = state.cap if isinstance(state, _State) else None
        sock = transport.get_extra_info("socket")
        if self._cap is not None and sock is not None:
            self._cap.started(sock.fileno())
        self._follow()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        self._stop_deadline()  # the next request has its own
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        if self._cap is not None:
            self._cap.idle.pop(self, None)
        super().connection_lost(exc)

    def _follow(self) -> None:
        if self.transport.is_closing():
            return
        theirs = self.conn.their_state
        if theirs is h11.DONE:  # the whole request is in: the handler may take its time
            self._stop_deadline()
        elif self._deadline is None:
            self._deadline = self.loop.call_later(REQUEST_TIMEOUT, self._too_slow)
        if self._cap is not None:
            idle = theirs is h11.IDLE or (self.cycle is not None and self.cycle.response_complete)
            if not idle:
                self._cap.idle.pop(self, None)
            elif self not in self._cap.idle:
                self._cap.idle[self] = None

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


# -- logging -----------------------------------------------------------------------


class _OncePerInterval(logging.Filter):
    """Lets the same message through once per `LOG_INTERVAL`, then says how many it held."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))  # msg may be any object
        now = time.monotonic()
        last, held = self._last.get(key, (-LOG_INTERVAL, 0))
        if now - last < LOG_INTERVAL:
            self._last[key] = (last, held + 1)
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last {now - last:.0f}s)"
        return True


@functools.cache
def _quiet_repeats() -> None:
    once = _OncePerInterval()
    for name in ("asyncio", "uvicorn.error", log.name):
        logging.getLogger(name).addFilter(once)


# -- servers -----------------------------------------------------------------------


class Server(uvicorn.Server):
    """uvicorn without its own signal handling (the agent owns SIGTERM and SIGHUP) and
    without its 10-per-second housekeeping tick: an idle agent should sleep. The tick's
    work (the Date header, once a second) runs once a second, on the agent's tick
    (agent/ticks.py) to share a wake-up with probe runs; `exit` ends it at once."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.server_state = _State()
        self._exit = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        for sock in sockets or ():
            if isinstance(sock, Listener):
                assert isinstance(self.server_state, _State)
                self.server_state.cap = sock.cap
        await super().startup(sockets)

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


def server_for(app: ASGIApp) -> Server:
    """The server for one listener; give it the socket from `bind` (serve(sockets=[...]))."""
    _quiet_repeats()
    return Server(
        uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            http=GuardedH11Protocol,  # h11, what is installed: no probing for optional parsers
            ws="none",  # no websocket routes
            access_log=False,
            timeout_graceful_shutdown=5,
            backlog=LISTEN_BACKLOG,  # uvicorn would listen() again with 2048
        )
    )
