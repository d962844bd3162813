"""Running configured commands: argv lists only, always with a timeout.

Each command runs in its own session (process group), so that on timeout or
agent shutdown the whole tree it spawned is ended, not only its first process.
Output is bounded: a runaway command cannot fill the agent's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

OUTPUT_LIMIT = 16 * 1024
KILL_GRACE = 2.0

_running: set[asyncio.subprocess.Process] = set()


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_code: int | None
    output: str
    duration: float
    timed_out: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.error is None

    def summary(self) -> str:
        if self.error:
            return self.error
        if self.timed_out:
            return f"timed out after {self.duration:.1f}s; process group killed"
        return f"exit {self.exit_code} in {self.duration:.2f}s"


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


async def _read_bounded(stream: asyncio.StreamReader) -> bytes:
    """Keep the last OUTPUT_LIMIT bytes; keep reading so the child never blocks on a full pipe."""
    kept = b""
    while chunk := await stream.read(65536):
        kept = (kept + chunk)[-OUTPUT_LIMIT:]
    return kept


def _signal_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def _end_group(proc: asyncio.subprocess.Process) -> None:
    _signal_group(proc, signal.SIGTERM)
    try:
        async with asyncio.timeout(KILL_GRACE):
            await proc.wait()
    except TimeoutError:
        pass
    finally:
        # Children that ignored SIGTERM, the group's other members, and everything left
        # when the caller gives up waiting (a probe's deadline cancels this) go now.
        _signal_group(proc, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(KILL_GRACE):
            await proc.wait()


async def run(
    argv: list[str] | tuple[str, ...],
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    """Run argv (no shell) with a timeout; never raises for the command's own failures."""
    started = time.monotonic()
    args = tuple(argv)
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **env} if env else None,
        )
    except OSError as exc:
        return CommandResult(
            args,
            None,
            "",
            time.monotonic() - started,
            error=f"cannot start {args[0]}: {exc.strerror}",
        )
    _running.add(proc)
    assert proc.stdout is not None
    reader = asyncio.ensure_future(_read_bounded(proc.stdout))
    timed_out = False
    try:
        async with asyncio.timeout(timeout):
            await proc.wait()
    except TimeoutError:
        timed_out = True
        await _end_group(proc)
    except asyncio.CancelledError:
        reader.cancel()
        await _end_group(proc)
        raise
    finally:
        _running.discard(proc)
    try:
        async with asyncio.timeout(KILL_GRACE):
            output = await reader
    except TimeoutError:
        # A grandchild that left the group still holds the pipe; do not wait for it.
        output = b""
    return CommandResult(
        args,
        proc.returncode if not timed_out else None,
        output.decode("utf-8", "replace"),
        time.monotonic() - started,
        timed_out=timed_out,
    )


async def end_all() -> None:
    """End every command still running (agent shutdown)."""
    await asyncio.gather(*(_end_group(p) for p in list(_running)), return_exceptions=True)
