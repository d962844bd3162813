"""File-age probe: a heartbeat file was touched recently (cron jobs, batch writers)."""

from __future__ import annotations

import os
import time
from functools import partial

from agent.blocking import Blocking
from agent.config import FileAgeProbe
from agent.probes.base import Outcome, Probe


class FileAgeCheck(Probe):
    kind = "file_age"

    def __init__(self, cfg: FileAgeProbe) -> None:
        self.cfg = cfg
        self.blocking = Blocking()

    async def check(self) -> Outcome:
        try:
            st = await self.blocking.call(partial(os.stat, self.cfg.path))
        except OSError as exc:
            return Outcome(False, f"{self.cfg.path}: {exc.strerror or exc}")
        age = time.time() - st.st_mtime
        if age > self.cfg.max_age:
            return Outcome(False, f"{self.cfg.path} is {age:.0f}s old, max {self.cfg.max_age:g}s")
        return Outcome(True, f"{self.cfg.path} is {age:.0f}s old")
