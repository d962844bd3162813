"""Process probe: a process is running, found by name or through its pidfile (psutil)."""

from __future__ import annotations

import psutil

from agent.blocking import Blocking
from agent.config import ProcessProbe
from agent.probes.base import Outcome, Probe


class ProcessCheck(Probe):
    kind = "process"

    def __init__(self, cfg: ProcessProbe) -> None:
        self.cfg = cfg
        self.blocking = Blocking()

    async def check(self) -> Outcome:
        return await self.blocking.call(self._look)

    def _look(self) -> Outcome:
        if self.cfg.pidfile is not None:
            try:
                text = self.cfg.pidfile.read_text().strip()
                pid = int(text.split()[0])
            except (OSError, ValueError, IndexError) as exc:
                return Outcome(False, f"pidfile {self.cfg.pidfile}: {exc}")
            try:
                proc = psutil.Process(pid)
                if proc.status() == psutil.STATUS_ZOMBIE:
                    return Outcome(False, f"pid {pid} is a zombie")
            except psutil.NoSuchProcess:
                return Outcome(False, f"pid {pid} from {self.cfg.pidfile} is not running")
            return Outcome(True, f"pid {pid} running")
        pids = [
            p.info["pid"]
            for p in psutil.process_iter(["pid", "name", "status"])
            if p.info["name"] == self.cfg.name and p.info["status"] != psutil.STATUS_ZOMBIE
        ]
        if not pids:
            return Outcome(False, f"no process named {self.cfg.name!r}")
        return Outcome(True, f"{len(pids)} process(es) named {self.cfg.name!r}")
