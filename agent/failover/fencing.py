"""The agent's end of a group's fencing process (agent/failover/fencer.py).

The member tells it each new deadline after a renewal and when it has stepped down; it
never waits on it except for the watchdog's arming before a promotion. What the fencer
reports (a fence it ran) comes back through `on_report` in the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import Group

log = logging.getLogger("hadeck.failover")

#: How long a promotion waits for the fencer to say whether the watchdog is armed.
ARM_WAIT = 2.0
#: What may queue for a fencer that does not read (frozen): a few minutes of renewals.
MAX_BUFFER = 64 * 1024


class Fencing:
    def __init__(
        self,
        group: str,
        member: str,
        cfg: Group,
        on_report: Callable[[dict[str, Any]], None],
        reports: Path,
    ) -> None:
        self.group, self.member, self.cfg = group, member, cfg
        #: Where it writes what it did once its agent is gone (read by the next agent).
        self.reports = reports
        self.on_report = on_report
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._armed: asyncio.Future[dict[str, Any]] | None = None
        self._restart: asyncio.Task[None] | None = None
        self._lost = False

    @staticmethod
    def wanted(cfg: Group) -> bool:
        return cfg.hooks.fence is not None or cfg.watchdog is not None

    def _config(self) -> str:
        fence = self.cfg.hooks.fence
        wd = self.cfg.watchdog
        return json.dumps(
            {
                "fence": {"argv": fence.command, "timeout": fence.timeout} if fence else None,
                "watchdog": (
                    {"device": str(wd.device), "timeout": self.cfg.watchdog_timeout} if wd else None
                ),
                "env": {"HADECK_GROUP": self.group, "HADECK_MEMBER": self.member},
                "reports": str(self.reports),
            }
        )

    async def start(self) -> None:
        """Spawn it in a session of its own: it must outlive a killed or frozen agent."""
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent.failover.fencer",
            self._config(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        self._reader = asyncio.create_task(self._read(self._proc), name=f"fencer:{self.group}")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if "armed" in message and self._armed is not None and not self._armed.done():
                self._armed.set_result(message)
            elif "armed" not in message or not message["armed"]:
                try:
                    self.on_report(message)
                except Exception:  # the reader must outlive a bad report
                    log.exception("group %s: fencing report %r", self.group, message)
        if self._armed is not None and not self._armed.done():
            self._armed.set_result({"armed": False, "error": "the fencing process exited"})
        code = await proc.wait()
        log.warning("group %s: fencing process exited (%s)", self.group, code)

    async def _alive(self) -> bool:
        if self._proc is not None and self._proc.returncode is None:
            return True
        log.warning("group %s: fencing process not running; starting it again", self.group)
        try:
            await self.start()
        except OSError as exc:
            log.error("group %s: cannot start the fencing process: %s", self.group, exc)
            return False
        return True

    def _send(self, message: dict[str, Any]) -> bool:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return False
        transport = proc.stdin.transport
        if transport.get_write_buffer_size() > MAX_BUFFER:
            return False  # it is not reading; the deadline it has is the safe one
        try:
            proc.stdin.write((json.dumps(message) + "\n").encode())
        except (ConnectionError, RuntimeError):
            return False
        return True

    async def arm(self, deadline: float, expiry: float) -> str | None:
        """Hand it the first deadline of a lease; None once it holds it (and the watchdog, if
        any, is armed), else why not."""
        if not await self._alive():
            return "the fencing process cannot be started"
        self._armed = asyncio.get_running_loop().create_future()
        if not self._send({"op": "hold", "deadline": deadline, "expiry": expiry, "ack": True}):
            return "the fencing process does not take messages"
        try:
            answer = await asyncio.wait_for(self._armed, ARM_WAIT)
        except TimeoutError:
            return f"the fencing process did not answer within {ARM_WAIT:g}s"
        return None if answer.get("armed") else str(answer.get("error") or "not armed")

    def hold(self, deadline: float, expiry: float) -> None:
        if self._send({"op": "hold", "deadline": deadline, "expiry": expiry}):
            self._lost = False
            return
        # It died (or stopped reading) while this member is primary: say so once per
        # outage, and bring a new one up with this deadline.
        if not self._lost:
            self._lost = True
            self.on_report({"error": "the fencing process does not take the deadline"})
        if self._restart is None or self._restart.done():
            self._restart = asyncio.create_task(self._respawn(deadline, expiry))

    async def _respawn(self, deadline: float, expiry: float) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            return  # alive but not reading (stopped): the deadline it has is the safe one
        if await self._alive():
            self._send({"op": "hold", "deadline": deadline, "expiry": expiry})

    def down(self) -> None:
        self._send({"op": "down"})

    async def stop(self) -> None:
        """A planned stop, after the member stepped down: the fencer disarms and exits."""
        proc = self._proc
        if proc is None:
            return
        self._send({"op": "quit"})
        if proc.stdin is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 2.0)
        except TimeoutError:
            # Still holding (the member could not step down): it fences at the deadline,
            # then ends by itself. Killing it would lose that fence.
            log.warning(
                "group %s: fencing process %s still holds a deadline; left to fence",
                self.group,
                proc.pid,
            )
            return
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader, 1.0)
