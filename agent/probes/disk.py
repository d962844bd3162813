"""Disk probe: the filesystem holding a path keeps a minimum of free space."""

from __future__ import annotations

from functools import partial

import psutil

from agent.blocking import Blocking
from agent.config import DiskProbe
from agent.probes.base import Outcome, Probe


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


class DiskCheck(Probe):
    kind = "disk"

    def __init__(self, cfg: DiskProbe) -> None:
        self.cfg = cfg
        self.blocking = Blocking()

    async def check(self) -> Outcome:
        try:
            usage = await self.blocking.call(partial(psutil.disk_usage, str(self.cfg.path)))
        except OSError as exc:
            return Outcome(False, f"{self.cfg.path}: {exc.strerror or exc}")
        free_pct = 100.0 * usage.free / usage.total if usage.total else 0.0
        detail = f"{human(usage.free)} free ({free_pct:.1f}%) on {self.cfg.path}"
        if self.cfg.min_free is not None and usage.free < self.cfg.min_free:
            return Outcome(False, f"{detail}, below {human(self.cfg.min_free)}")
        if self.cfg.min_free_percent is not None and free_pct < self.cfg.min_free_percent:
            return Outcome(False, f"{detail}, below {self.cfg.min_free_percent:g}%")
        return Outcome(True, detail)
