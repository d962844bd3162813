"""Running configured commands: argv lists only, always with a timeout.

Each command runs in its own session (process group), so that on timeout,
cancellation or agent shutdown the whole tree it spawned is ended, not only its
first process. The command's own failures (it cannot start, exits non-zero, times
out) are results, never exceptions.

stdout and stderr are read apart, each into a buffer that keeps the last `limit`
bytes: a restic `--json` run ends with its summary line, and an operator reads the
end of an error. Output beyond that is never cut silently: the result says
`stdout_truncated` (or `stderr_truncated`), and a caller that parses stdout must
refuse a truncated document. The pipes are always drained, so a chatty child never
blocks on a full pipe and the agent's memory stays bounded. Lines can go to
callbacks as they arrive (restic's progress lines); a line longer than `limit`
reaches its callback cut to its first `limit` bytes, the rest dropped up to the
next newline.

`run_piped` connects one command's stdout to another's stdin through an OS pipe
(the data never passes through the agent): a database dump into
`restic backup --stdin`. One deadline covers both; either side failing fails the
pipeline, as with `set -o pipefail`.

Cost per run matters: command probes run every few seconds. Our ends of the pipes
are read straight from the event loop's selector (`add_reader`) and every wait is
on a plain future, so a run starts no task and no thread of its own: the
StreamReader API needs a task per pipe, asyncio's pipe transports cost two loop
iterations each to connect, and on 3.11 `asyncio.wait_for` made a task per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import cast

OUTPUT_LIMIT = 16 * 1024
KILL_GRACE = 2.0
READ_SIZE = 65536  # a pipe's default capacity: one read takes what the child wrote

LineCallback = Callable[[str], object]
# What a command reads: nothing (/dev/null), these bytes, or this file.
Stdin = bytes | os.PathLike[str] | None

_PIPE = asyncio.subprocess.PIPE
_DEVNULL = asyncio.subprocess.DEVNULL

_running: set[_Child] = set()


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_code: int | None
    duration: float
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    error: str | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.error is None

    @property
    def output(self) -> str:
        """What an operator reads: stdout, then stderr, the last OUTPUT_LIMIT characters."""
        if not self.stderr:
            return self.stdout[-OUTPUT_LIMIT:]
        gap = "\n" if self.stdout and not self.stdout.endswith("\n") else ""
        return (self.stdout[-OUTPUT_LIMIT:] + gap + self.stderr)[-OUTPUT_LIMIT:]

    def summary(self) -> str:
        if self.error:
            return self.error
        if self.timed_out:
            return f"timed out after {self.duration:.1f}s; process group killed"
        return f"exit {self.exit_code} in {self.duration:.2f}s"


@dataclass(frozen=True)
class PipedResult:
    """Both sides of `run_piped`; it is ok only when both are (pipefail)."""

    producer: CommandResult
    consumer: CommandResult

    @property
    def ok(self) -> bool:
        return self.producer.ok and self.consumer.ok

    @property
    def timed_out(self) -> bool:
        return self.producer.timed_out or self.consumer.timed_out

    @property
    def stdout(self) -> str:
        return self.consumer.stdout

    @property
    def stdout_truncated(self) -> bool:
        return self.consumer.stdout_truncated

    def summary(self) -> str:
        return " | ".join(
            f"{os.path.basename(r.argv[0])}: {r.summary()}" for r in (self.producer, self.consumer)
        )


def watch_children_with_pidfds() -> bool:
    """On Python 3.11, wait for children through pidfds in the event loop.

    3.11's default watcher starts a thread per child to block in waitpid: for an
    agent running command probes every few seconds, a thread start and a
    cross-thread wake-up per probe run. 3.12 and later use pidfds on their own.
    Call from the running loop before the first command; False where the kernel
    (or a seccomp policy) has no pidfd_open, and the default stays.
    """
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)
    return True


class _Stream:
    """One pipe: the last `limit` bytes, and its lines for a callback."""

    __slots__ = ("_line", "limit", "on_line", "tail", "truncated")

    def __init__(self, limit: int, on_line: LineCallback | None) -> None:
        self.limit = limit
        self.tail = bytearray()
        self.truncated = False
        self.on_line = on_line
        self._line = bytearray()

    def feed(self, data: bytes) -> None:
        tail = self.tail
        tail += data
        if len(tail) > self.limit:
            # bytearray drops its head by moving its start; it copies the kept bytes only
            # when it outgrows its allocation (100 MB through a 2 MiB limit: 0.3 s of CPU).
            del tail[: len(tail) - self.limit]
            self.truncated = True
        if self.on_line is not None:
            view, start = memoryview(data), 0
            while (end := data.find(b"\n", start)) != -1:
                self._keep(view[start:end])
                self._emit()
                start = end + 1
            self._keep(view[start:])

    def _keep(self, piece: memoryview) -> None:
        room = self.limit - len(self._line)
        self._line += piece[:room] if len(piece) > room else piece

    def _emit(self) -> None:
        line = self._line.decode("utf-8", "replace")
        self._line.clear()
        if self.on_line is not None:
            self.on_line(line)

    def end(self) -> None:
        """The pipe closed: a last line without its newline is a line too."""
        if self._line and self.on_line is not None:
            self._emit()
        self.on_line = None

    def text(self) -> str:
        start = 0
        if self.truncated:
            # The cut may have landed inside a UTF-8 sequence: start at the next character.
            while start < min(4, len(self.tail)) and self.tail[start] & 0xC0 == 0x80:
                start += 1
        return str(memoryview(self.tail)[start:], "utf-8", "replace")


class _Child(asyncio.SubprocessProtocol):
    """One started command: its pipes, its exit, and what a line callback raised."""

    def __init__(
        self,
        argv: tuple[str, ...],
        limit: int,
        on_stdout: LineCallback | None,
        on_stderr: LineCallback | None,
        interrupt: asyncio.Future[None] | None,
        capture_stdout: bool = True,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.argv = argv
        self.stdout = _Stream(limit, on_stdout) if capture_stdout else None
        self.stderr = _Stream(limit, on_stderr)
        self.exited: asyncio.Future[None] = self.loop.create_future()
        # Exited, and every pipe at its end (or closed by us).
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.transport: asyncio.SubprocessTransport | None = None
        self.error: Exception | None = None
        self.ended_at: float | None = None
        self._interrupt = interrupt
        self._fds: dict[int, _Stream] = {}
        self._transport_done = False

    def read(self, fd: int, stream: _Stream) -> None:
        """Read fd (our end of a pipe) from the selector as data comes: no transport, no task."""
        os.set_blocking(fd, False)
        self._fds[fd] = stream
        self.loop.add_reader(fd, self._ready, fd)

    def _ready(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        stream = self._fds[fd]
        if data:
            self._guard(stream.feed, data)
            return
        self._close(fd)
        self._guard(stream.end)
        self._check_closed()

    def _close(self, fd: int) -> None:
        self.loop.remove_reader(fd)
        os.close(fd)
        del self._fds[fd]

    def close(self) -> None:
        """Stop reading (a grandchild may still hold a pipe) and release the transport."""
        for fd in list(self._fds):
            self._close(fd)
        if self.transport is not None:
            self.transport.close()

    def process_exited(self) -> None:
        self.ended_at = time.monotonic()
        # What the group leaves behind now (a daemon a restart command started) is no
        # longer the command's: agent shutdown does not end it.
        _running.discard(self)
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport_done = True
        self._check_closed()

    def _check_closed(self) -> None:
        if self._transport_done and not self._fds and not self.closed.done():
            self.closed.set_result(None)

    def _guard(self, call: Callable[..., None], *args: bytes) -> None:
        try:
            call(*args)
        except Exception as exc:  # the caller's line callback: run() ends the command, raises it
            if self.error is None:
                self.error = exc
            for stream in (self.stdout, self.stderr):
                if stream is not None:
                    stream.on_line = None
            if self._interrupt is not None and not self._interrupt.done():
                self._interrupt.set_result(None)

    @property
    def pid(self) -> int:
        assert self.transport is not None
        return self.transport.get_pid()

    def result(self, started: float, timed_out: bool) -> CommandResult:
        assert self.transport is not None
        out, err = self.stdout, self.stderr
        return CommandResult(
            self.argv,
            None if timed_out else self.transport.get_returncode(),
            (self.ended_at or time.monotonic()) - started,
            stdout=out.text() if out is not None else "",
            stderr=err.text(),
            timed_out=timed_out,
            stdout_truncated=out is not None and out.truncated,
            stderr_truncated=err.truncated,
        )


def _not_run(argv: tuple[str, ...], started: float, error: str) -> CommandResult:
    return CommandResult(argv, None, time.monotonic() - started, error=error)


def _open_stdin(stdin: Stdin) -> tuple[int, bytes | None, str | None]:
    """The child's stdin: /dev/null, a pipe the data is written into, or a file's fd;
    or why the file cannot be read.

    O_NONBLOCK keeps a FIFO's open from blocking the event loop; the child gets the fd
    back in blocking mode, as programs expect.
    """
    if stdin is None:
        return _DEVNULL, None, None
    if isinstance(stdin, bytes):
        return _PIPE, stdin, None
    try:
        fd = os.open(stdin, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return -1, None, f"cannot open stdin file {os.fspath(stdin)}: {exc.strerror}"
    os.set_blocking(fd, True)
    return fd, None, None


async def _start(
    child: _Child,
    env: Mapping[str, str] | None,
    stdin: int,
    stdout: int | None = None,
    data: bytes | None = None,
) -> str | None:
    """Start child in a session of its own; the reason when it cannot start.

    stdout goes to the fd given, else to a pipe read into child.stdout; stderr always
    to a pipe read into child.stderr.
    """
    loop = asyncio.get_running_loop()
    pipes: list[tuple[int, int, _Stream]] = []
    if stdout is None:
        assert child.stdout is not None
        pipes.append((*os.pipe(), child.stdout))
    pipes.append((*os.pipe(), child.stderr))
    try:
        transport, _ = await loop.subprocess_exec(
            lambda: child,
            *child.argv,
            stdin=stdin,
            stdout=pipes[0][1] if stdout is None else stdout,
            stderr=pipes[-1][1],
            start_new_session=True,
            env={**os.environ, **env} if env else None,
        )
    except (OSError, ValueError) as exc:  # ValueError: a NUL in an argument
        for read_end, _, _ in pipes:
            os.close(read_end)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        return f"cannot start {child.argv[0]}: {reason}"
    except BaseException:
        for read_end, _, _ in pipes:
            os.close(read_end)
        raise
    finally:
        for _, write_end, _ in pipes:
            os.close(write_end)
    child.transport = transport
    _running.add(child)
    for read_end, _, stream in pipes:
        child.read(read_end, stream)
    if data is not None:
        # The transport writes as the child reads; a child that never reads is no error.
        pipe = cast(asyncio.WriteTransport, transport.get_pipe_transport(0))
        pipe.write(data)
        pipe.write_eof()
    return None


def _signal_group(child: _Child, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)


async def _end_groups(children: Iterable[_Child]) -> None:
    """SIGTERM every group; SIGKILL them after the grace, or at once when cut off."""
    children = list(children)
    if not children:
        return
    for child in children:
        _signal_group(child, signal.SIGTERM)
    try:
        await asyncio.wait([c.exited for c in children], timeout=KILL_GRACE)
    finally:
        # Children that ignored SIGTERM, the groups' other members, and everything left
        # when the caller gives up waiting (a probe's deadline cancels this) go now.
        for child in children:
            _signal_group(child, signal.SIGKILL)
    await asyncio.wait([c.exited for c in children], timeout=KILL_GRACE)


async def _wait_exits(
    children: list[_Child], timeout: float, interrupt: asyncio.Future[None] | None
) -> None:
    """Until every child has exited or a line callback raised; TimeoutError at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pending := {c.exited for c in children if not c.exited.done()}:
        if interrupt is not None:
            if interrupt.done():
                return
            pending.add(interrupt)
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError
        await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)


async def _finish(
    children: list[_Child],
    started: float,
    timeout: float | None,
    interrupt: asyncio.Future[None] | None,
) -> list[CommandResult]:
    """Wait for started children under one deadline (None: end them now), and collect.

    Past the deadline, on cancellation or when a line callback raised, every group is
    ended; the transports are closed whatever happens.
    """
    timed_out: set[_Child] = set()
    try:
        try:
            if timeout is None:
                await _end_groups(children)
            else:
                await _wait_exits(children, timeout, interrupt)
        except TimeoutError:
            timed_out = {c for c in children if not c.exited.done()}
            await _end_groups(children)
        except asyncio.CancelledError:
            await _end_groups(children)
            raise
        if any(c.error for c in children):
            await _end_groups(children)
        elif unclosed := [c.closed for c in children if not c.closed.done()]:
            # A grandchild that left the group may hold a pipe open: do not wait for it long.
            await asyncio.wait(unclosed, timeout=KILL_GRACE)
    finally:
        for child in children:
            _running.discard(child)
            child.close()
    for child in children:
        if child.error is not None:
            raise child.error
    return [child.result(started, child in timed_out) for child in children]


def _interrupt(*callbacks: LineCallback | None) -> asyncio.Future[None] | None:
    """A future a raising callback resolves, so that the wait ends at once; only if needed."""
    if any(cb is not None for cb in callbacks):
        return asyncio.get_running_loop().create_future()
    return None


async def run(
    argv: Sequence[str],
    timeout: float,
    env: Mapping[str, str] | None = None,
    *,
    limit: int = OUTPUT_LIMIT,
    on_stdout: LineCallback | None = None,
    on_stderr: LineCallback | None = None,
    stdin: Stdin = None,
) -> CommandResult:
    """Run argv (no shell) with a timeout; never raises for the command's own failures.

    `limit` bounds what is kept of each of stdout and stderr (the last bytes) and the
    length of a line passed to a callback. `on_stdout` / `on_stderr` are called in the
    event loop with each line, without its newline, as it arrives; they must not block.
    An exception from one ends the command's group and is raised from here.
    """
    started = time.monotonic()
    args = tuple(argv)
    source, data, unreadable = _open_stdin(stdin)
    if unreadable is not None:
        return _not_run(args, started, unreadable)
    interrupt = _interrupt(on_stdout, on_stderr)
    child = _Child(args, limit, on_stdout, on_stderr, interrupt)
    try:
        error = await _start(child, env, source, None, data)
    finally:
        if source >= 0:
            os.close(source)
    if error is not None:
        return _not_run(args, started, error)
    (result,) = await _finish([child], started, timeout, interrupt)
    return result


async def run_piped(
    producer: Sequence[str],
    consumer: Sequence[str],
    timeout: float,
    *,
    producer_env: Mapping[str, str] | None = None,
    consumer_env: Mapping[str, str] | None = None,
    limit: int = OUTPUT_LIMIT,
    on_stdout: LineCallback | None = None,
    stdin: Stdin = None,
) -> PipedResult:
    """Run `producer | consumer` (no shell): each in its own group, one timeout for both.

    The producer reads `stdin`; `on_stdout` gets the consumer's lines; each side's
    stderr is kept apart. Each side gets only its own env, so a repository password
    meant for restic never reaches the dump command. The consumer starts first: if it
    cannot start, no producer runs; if the producer cannot start, the consumer is ended
    before it can take the empty stream for a complete one. A producer that fails after
    writing leaves the consumer to finish with what it got (a partial snapshot the
    caller must discard: the pipeline is not ok).
    """
    started = time.monotonic()
    first_argv, second_argv = tuple(producer), tuple(consumer)
    source, data, unreadable = _open_stdin(stdin)
    if unreadable is not None:
        return PipedResult(
            _not_run(first_argv, started, unreadable),
            _not_run(second_argv, started, f"not started: {unreadable}"),
        )
    interrupt = _interrupt(on_stdout)
    first = _Child(first_argv, limit, None, None, interrupt, capture_stdout=False)
    second = _Child(second_argv, limit, on_stdout, None, interrupt)
    read_end, write_end = os.pipe()
    try:
        error = await _start(second, consumer_env, read_end)
        if error is not None:
            return PipedResult(
                _not_run(first_argv, started, f"not started: {second_argv[0]} could not start"),
                _not_run(second_argv, started, error),
            )
        try:
            error = await _start(first, producer_env, source, write_end, data)
        except BaseException:
            await _finish([second], started, None, None)
            raise
        if error is not None:
            # Ended while our write end still holds its input open: it never sees an end.
            (ended,) = await _finish([second], started, None, None)
            return PipedResult(
                _not_run(first_argv, started, error),
                replace(ended, error=f"ended: {first_argv[0]} could not start"),
            )
    finally:
        for fd in (read_end, write_end, source):
            if fd >= 0:
                os.close(fd)
    results = await _finish([first, second], started, timeout, interrupt)
    return PipedResult(results[0], results[1])


async def end_all() -> None:
    """End every command still running (agent shutdown)."""
    await _end_groups(list(_running))
