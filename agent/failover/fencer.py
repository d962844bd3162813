"""The fencing process: holds a primary's deadline outside the agent, and fences at it.

The agent's own loop demotes at the lease deadline, but a loop that is frozen (SIGSTOP,
a stuck disk, a debugger) or an agent that was killed runs nothing, and its service
would stay primary while another member promotes. One fencer runs beside the agent for
each group that has a `fence` hook or a `watchdog`, in a session of its own (a signal
to the agent's process group does not reach it), and knows only what the agent last
told it on its stdin (JSON lines):

    {"op": "hold", "deadline": D, "expiry": E}  renewed: primary until D, lease ends >= E
    {"op": "down"}                                 stepped down: nothing to fence
    {"op": "quit"}                                 the agent stops (after "down")

When D passes without a newer "hold" or a "down" (and also when the agent's pipe
closes: the agent died), it runs the fence command at once. With a watchdog it arms the
device at the first "hold" and kicks it only while a kick cannot carry the host past
E (kick time + the watchdog's timeout <= E - 0.25 s), so if this process stops too
(a frozen VM) the device fires before any other member can take the lease. It disarms
the device (magic close) once the member has stepped down or been fenced; a fence that
failed leaves it armed, to fire.

It answers on stdout (JSON lines): {"armed": true} or {"armed": false, "error": ...}
after the first "hold", and {"fenced": {...}} with the fence's outcome. Times are
`now()`, the same clock in every process of one machine.

Standard library only: it must start fast and hold little, and it must not share
anything with the agent's event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from typing import IO, Any

from agent.clock import now  # standard library only, like this module

#: Linux <linux/watchdog.h>: _IOWR('W', 6, int) and _IOR('W', 7, int).
WDIOC_SETTIMEOUT = 0xC0045706
WDIOC_GETTIMEOUT = 0x80045707
#: A kick must leave this much between the watchdog firing and the lease's earliest end.
KICK_MARGIN = 0.25
TICK = 0.1


class Watchdog:
    """A Linux watchdog device (`/dev/watchdog`, softdog): opening it arms it, any write
    kicks it, writing `V` before closing disarms it. A FIFO stands in for one where a
    userspace watchdog (or a test) reads it: it gets `timeout=N` as its first line."""

    def __init__(self, device: str, timeout: int) -> None:
        self.device, self.wanted = device, timeout
        self.timeout = timeout
        self._fd: int | None = None
        self.kicks = 0

    @property
    def armed(self) -> bool:
        return self._fd is not None

    def arm(self) -> None:
        if self._fd is not None:
            return
        fifo = stat.S_ISFIFO(os.stat(self.device).st_mode)
        # A FIFO with no reader would block the open: no reader is no watchdog.
        fd = os.open(self.device, os.O_WRONLY | (os.O_NONBLOCK if fifo else 0))
        try:
            if fifo:
                os.set_blocking(fd, True)
                os.write(fd, f"timeout={self.wanted}\n".encode())
            else:
                fcntl.ioctl(fd, WDIOC_SETTIMEOUT, struct.pack("i", self.wanted))
                got = struct.unpack("i", fcntl.ioctl(fd, WDIOC_GETTIMEOUT, b"\0" * 4))[0]
                if got > self.wanted:
                    raise OSError(f"the device set a timeout of {got}s, not {self.wanted}s")
                self.timeout = got
        except BaseException:
            self._disarm_fd(fd)
            raise
        self._fd = fd

    def kick(self) -> None:
        if self._fd is not None:
            os.write(self._fd, b"\0")
            self.kicks += 1

    def disarm(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            self._disarm_fd(fd)

    @staticmethod
    def _disarm_fd(fd: int) -> None:
        with contextlib.suppress(OSError):
            os.write(fd, b"V")
        with contextlib.suppress(OSError):
            os.close(fd)

    def abandon(self) -> None:
        """Close without the magic character: the device keeps counting and fires."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)


class Fencer:
    def __init__(self, cfg: dict[str, Any], out: IO[str]) -> None:
        self.cfg, self.out = cfg, out
        fence = cfg.get("fence")
        self.fence_argv: list[str] | None = fence["argv"] if fence else None
        self.fence_timeout = float(fence["timeout"]) if fence else 0.0
        wd = cfg.get("watchdog")
        self.watchdog = Watchdog(wd["device"], int(wd["timeout"])) if wd else None
        self.deadline: float | None = None  # while holding
        self.expiry = 0.0
        self.agent_gone = False
        self._kick_failed = False
        #: Fenced, and not told of a step-down since: later holds are stale.
        self.fenced = False
        self._buffer = b""

    def say(self, **message: Any) -> bool:
        """Never blocks (stdout is non-blocking): a frozen agent's full pipe costs the
        message, not a fence or a kick. False when it could not be written whole."""
        data = (json.dumps(message) + "\n").encode()
        try:
            return os.write(self.out.fileno(), data) == len(data)
        except (OSError, ValueError):
            return False

    def handle(self, message: dict[str, Any]) -> bool:
        """One message from the agent; False to end."""
        op = message.get("op")
        if op == "hold":
            if self.fenced and not message.get("ack"):
                return True  # a renewal that came back late: the service is fenced already
            self.fenced = False  # "ack": a new acquisition
            self.deadline = float(message["deadline"])
            self.expiry = float(message["expiry"])
            error = None
            wd = self.watchdog
            if wd is not None and not wd.armed:
                if now() + wd.wanted > self.expiry - KICK_MARGIN:
                    # Opening the device is a kick: not one that could reach past the lease.
                    error = f"watchdog {wd.device}: too late to arm before the lease's end"
                else:
                    try:
                        wd.arm()
                    except OSError as exc:
                        error = f"watchdog {wd.device}: {exc}"
            if message.get("ack") or error:
                self.say(armed=error is None, error=error)
            self.kick()
        elif op == "down":
            self.deadline, self.fenced = None, False
            if self.watchdog is not None:
                self.watchdog.disarm()
        elif op == "quit":
            if self.deadline is None:
                return False
            self.agent_gone = True  # still holding: fence at the deadline, then end
        return True

    def kick(self) -> None:
        wd = self.watchdog
        if wd is None or not wd.armed or self.deadline is None:
            return
        if now() + wd.timeout <= self.expiry - KICK_MARGIN:
            try:
                wd.kick()
                self._kick_failed = False
            except OSError as exc:
                if not self._kick_failed:  # once: a frozen agent's pipe must not fill up
                    self._kick_failed = True
                    self.say(kick_failed=str(exc))

    def fence(self) -> None:
        """The deadline passed while holding: make sure this member serves no writes."""
        late = now() - (self.deadline or 0.0)
        self.deadline, self.fenced = None, True
        outcome: dict[str, Any] = {"late": round(late, 3), "agent_gone": self.agent_gone}
        if self.fence_argv is None:
            outcome.update(ok=False, error="no fence command; the watchdog is left to fire")
        else:
            outcome.update(self._run_fence())
        if self.watchdog is not None:
            if outcome["ok"]:
                self.watchdog.disarm()
            else:
                self.watchdog.abandon()
        said = self.say(fenced=outcome)
        if self.agent_gone or not said:  # nobody reads it: the next agent journals it
            self._leave_report({"fenced": outcome, "at": time.time()})

    def _leave_report(self, report: dict[str, Any]) -> None:
        path = self.cfg.get("reports")
        if not path:
            return
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, (json.dumps(report) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            print(f"fencer: cannot write {path}: {exc}", file=sys.stderr)

    def _run_fence(self) -> dict[str, Any]:
        assert self.fence_argv is not None
        env = {**os.environ, **self.cfg.get("env", {}), "HADECK_ROLE": "fenced"}
        started = now()
        # stderr to a file, not a pipe: a background child that keeps the pipe open must
        # not make a fence that exited 0 look hung. The exit is what is waited for.
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    self.fence_argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                return {"ok": False, "error": f"cannot run {self.fence_argv[0]}: {exc}"}
            try:
                proc.wait(timeout=self.fence_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=1.0)  # stuck in the kernel: do not wait for it
                return {"ok": False, "timed_out": True, "duration": round(self.fence_timeout, 3)}
            err.seek(0)
            return {
                "ok": proc.returncode == 0,
                "exit_code": proc.returncode,
                "duration": round(now() - started, 3),
                "stderr": err.read()[-500:].decode(errors="replace"),
            }

    def run(self, stdin: IO[bytes]) -> None:
        fd = stdin.fileno()
        os.set_blocking(self.out.fileno(), False)
        while True:
            if not self.agent_gone:
                wait = TICK if self.deadline is None else min(TICK, self.deadline - now())
                select.select([fd], [], [], max(0.0, wait))
                # Everything queued, before the deadline is judged: a backlog of holds
                # (this process was stopped) ends with the newest.
                if not self._read_all(fd):
                    self._end()
                    return
            if self.deadline is not None and now() >= self.deadline:
                self.fence()
            if self.agent_gone:
                if self.deadline is None:
                    break
                time.sleep(min(TICK, max(0.0, self.deadline - now())))
            self.kick()
        self._end()

    def _read_all(self, fd: int) -> bool:
        """Read and handle what is waiting; False once told to quit."""
        while select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                self.agent_gone = True
                return True
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\n")
            for line in lines:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    if not self.handle(json.loads(line)):
                        return False
        return True

    def _end(self) -> None:
        if self.watchdog is not None and self.deadline is None:
            self.watchdog.disarm()


def main(argv: list[str]) -> int:
    """`python -m agent.failover.fencer CONFIG_JSON`: the fence's argv and timeout, the
    hook environment, the watchdog's device and timeout (agent/failover/fencing.py)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent's Ctrl-C is not ours
    try:
        cfg = json.loads(argv[1])
    except (IndexError, ValueError):
        print(json.dumps({"error": "usage: python -m agent.failover.fencer CONFIG_JSON"}))
        return 2
    Fencer(cfg, sys.stdout).run(sys.stdin.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
