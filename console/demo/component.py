"""A real process that the demo, the tests or a benchmark depend on: start, ready, log, stop.

`hadeck demo` starts agents, the integration tests start agents, sshd, etcd and HAProxy,
the benchmarks start agents, etcd and HAProxy, and each needs the same four things done
right once:

- start it in its own process group (session), output appended to a log file of its own;
- wait until it is ready by a condition with a deadline (a port that answers, an HTTP
  200, a line in its log), failing at once if it exits first; a failed start ends the
  process and the error shows the tail of its log;
- stop it by SIGTERM, then SIGKILL to its whole group if it has not exited in time (a
  frozen process is thawed first, as it could not act on the SIGTERM);
- kill, freeze and thaw it, which is how tests and benchmarks make a host crash or hang.

It lives in the installed package because the demo runs from a wheel; it imports neither
the tests nor textual, and the agent never imports it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")
LOOPBACK = "127.0.0.1"


class ComponentError(Exception):
    """A component did not start, get ready or stop as asked, or a wait ran out; the message
    says which, and for a process, the last lines of its log."""


def wait_for(
    condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll `condition` until it returns something truthy, and return that.

    It is asked once more at the deadline, so a slow last poll is not a failure; then
    ComponentError says what was awaited and the last answer.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise ComponentError(
                f"timed out after {timeout:g}s waiting for {what} (last: {last!r})"
            )
        time.sleep(interval)


@functools.cache
def _ephemeral_range() -> range:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default


_handed_out: set[int] = set()


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now, for a component to listen on next.

    Chosen outside the kernel's ephemeral range: a port the kernel picked for us (bind to
    0) is from the range it also gives outgoing connections, so between this call and the
    component's bind a client socket could take it ("Address already in use", seen in CI).
    A port is not handed out twice by one process."""
    ephemeral = _ephemeral_range()
    candidates = [p for p in range(20000, 32768) if p not in ephemeral and p not in _handed_out]
    rng = random.Random()  # noqa: S311 - a port, not a secret
    for port in rng.sample(candidates, min(200, len(candidates))):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # a crowded machine: the kernel's choice, as before
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Readiness:
    """When a started component counts as ready: `check` is asked until it says yes."""

    what: str
    check: Callable[[Component], bool]


def port_open(port: int, host: str = LOOPBACK, banner: bytes = b"") -> Readiness:
    """Ready once a TCP connection to host:port succeeds (and the server first sends
    `banner`, when one is given, as sshd sends `SSH-2.0-`)."""

    def check(_: Component) -> bool:
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                return not banner or s.recv(len(banner) + 64).startswith(banner)
        except OSError:
            return False

    return Readiness(f"{host}:{port} to accept connections", check)


def http_ok(url: str, accept: Callable[[httpx.Response], bool] | None = None) -> Readiness:
    """Ready once GET `url` answers 200 (and `accept` likes the answer, when given)."""

    import httpx  # here: the demo service imports this module, and needs no HTTP client

    def check(_: Component) -> bool:
        try:
            r = httpx.get(url, timeout=1, trust_env=False)
            return r.status_code == 200 and (accept is None or accept(r))
        except (httpx.HTTPError, ValueError):
            return False

    return Readiness(f"GET {url} to answer 200", check)


def log_line(text: str) -> Readiness:
    """Ready once the component's log, since this start, contains `text`."""
    return Readiness(f"{text!r} in its log", lambda c: text in c.log_since_start())


@dataclass
class Component:
    """One child process, started again by `start()` after it stopped (same argv and log)."""

    name: str
    argv: Sequence[str]
    log_path: Path
    ready: Readiness
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    start_timeout: float = 30.0
    stop_timeout: float = 10.0
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log_offset: int = field(default=0, init=False, repr=False)
    _spawned_at: float = field(default=0.0, init=False, repr=False)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ComponentError(f"{self.name} was never started")
        return self.proc.pid

    def start(self, timeout: float | None = None) -> Component:
        """Start it and return once it is ready; ComponentError (process ended) if it exits
        first or is not ready within `timeout` (default `start_timeout`)."""
        self.spawn()
        return self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the process without waiting for it to be ready (see start_all())."""
        if self.running:
            raise ComponentError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self.proc = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=None if self.env is None else dict(self.env),
                cwd=self.cwd,
                # Its own process group: stop() and kill() reach what it started without
                # leaving it, and a Ctrl-C at the terminal reaches only the parent, which
                # then stops its components in order instead of racing them.
                start_new_session=True,
            )
        self._spawned_at = time.monotonic()

    def wait_ready(self, timeout: float | None = None) -> Component:
        """Return once the spawned process is ready, `timeout` after spawn() at the latest."""
        if self.proc is None:
            raise ComponentError(f"{self.name} was never started")
        limit = self.start_timeout if timeout is None else timeout
        deadline = self._spawned_at + limit
        while True:
            if self.proc.poll() is not None:
                raise ComponentError(
                    f"{self.name} exited with {self.proc.returncode} before it was ready "
                    f"({self.ready.what}){self._tail()}"
                )
            if self.ready.check(self):
                return self
            if time.monotonic() >= deadline:
                self.kill()
                raise ComponentError(
                    f"{self.name} was not ready within {limit:g}s (waiting for "
                    f"{self.ready.what}); killed it{self._tail()}"
                )
            time.sleep(0.05)

    def log(self) -> str:
        """Everything it has written, over every start."""
        return self._read_log(0)

    def log_since_start(self) -> str:
        return self._read_log(self._log_offset)

    def _read_log(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last lines it has written since this start."""
        return "\n".join(self.log_since_start().splitlines()[-lines:])

    def _tail(self) -> str:
        tail = self.log_tail()
        where = f"; log {self.log_path}"
        return f"{where}, last lines:\n{tail}" if tail else f"{where} (empty)"

    def send(self, sig: int) -> None:
        """Signal the process itself (SIGHUP to reload, say); nothing if it has ended."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def _group(self, sig: int) -> None:
        """Signal its process group. Only while its leader is unreaped (running or a zombie),
        so the group id cannot have been reused by another process."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def _exited(self, timeout: float) -> bool:
        """Wait up to `timeout` for the leader to exit, leaving it unreaped."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.returncode is None:
            try:
                if os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                    return True
            except ChildProcessError:  # reaped by someone else
                self.proc.poll()
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def _reap(self) -> int:
        """Kill what is left of its group (the leader has exited), then reap the leader."""
        assert self.proc is not None
        self._group(signal.SIGKILL)
        return self.proc.wait()

    def freeze(self) -> None:
        """A hang: SIGSTOP to its group; ports stay open, connections are accepted, nothing
        answers."""
        if not self.running:
            raise ComponentError(f"{self.name} is not running: cannot freeze it")
        self._group(signal.SIGSTOP)

    def thaw(self) -> None:
        self._group(signal.SIGCONT)

    def kill(self) -> int | None:
        """A crash: SIGKILL to its group, no chance to flush anything; returns the exit code
        (None if it was never started)."""
        if self.proc is None:
            return None
        self._group(signal.SIGKILL)
        return self.proc.wait()

    def terminate(self) -> None:
        """The first half of stop(): SIGCONT and SIGTERM, without waiting (stop_all() sends
        this to every component first, so they shut down side by side)."""
        if self.proc is not None and self.proc.returncode is None:
            self._group(signal.SIGCONT)  # a frozen process cannot act on SIGTERM
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, wait up to `timeout` (default `stop_timeout`), then SIGKILL to the group.

        Returns the exit code (None if it was never started). Having to kill it is an error
        (ComponentError, after the kill, with its log's tail): a component that ignores
        SIGTERM is a bug worth seeing."""
        if self.proc is None:
            return None
        self.terminate()
        return self._finish(self.stop_timeout if timeout is None else timeout)

    def _finish(self, timeout: float) -> int:
        assert self.proc is not None
        if self._exited(timeout):
            return self._reap()
        self.kill()
        raise ComponentError(
            f"{self.name} did not stop within {timeout:g}s of SIGTERM; killed it{self._tail()}"
        )


def start_all(components: Iterable[Component], timeout: float | None = None) -> None:
    """Start every component side by side: spawn all, then wait until each is ready."""
    started = list(components)
    for c in started:
        c.spawn()
    for c in started:
        c.wait_ready(timeout)


def stop_all(components: Iterable[Component], timeout: float | None = None) -> list[str]:
    """Stop every component, side by side: SIGTERM to all, then wait for each (and kill
    the ones that do not stop in time). Returns the errors, one line each, having stopped
    every component regardless."""
    started = [c for c in components if c.proc is not None]
    for c in started:
        c.terminate()
    errors = []
    for c in started:
        try:
            c._finish(c.stop_timeout if timeout is None else timeout)
        except ComponentError as exc:
            errors.append(str(exc))
    return errors


def agent(
    config: Path, url: str, log: Path, *, name: str = "agent", cwd: Path | None = None
) -> Component:
    """`hadeck-agent run --config FILE` with this interpreter; ready when its loopback API at
    `url` answers /healthz."""
    return Component(
        name,
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        log,
        http_ok(url.rstrip("/") + "/healthz"),
        cwd=cwd,
        stop_timeout=20.0,
    )
