"""Host resources (CPU, memory, load, disk per mount) sampled with psutil off the event loop,
and the subsystem that samples them on its schedule."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, Gauge

from agent.blocking import Blocking, StillBlocked
from agent.config import AgentConfig
from agent.scheduler import every, in_seconds
from agent.schema import DiskUsage, Resources
from agent.subsystem import Core, Job, JobSet, Prepared, Subsystem, Timing, Unchanged

log = logging.getLogger("hadeck.agent")

_SKIP_FS = {"squashfs", "tmpfs", "devtmpfs", "overlay", "proc", "sysfs", "cgroup2", "nsfs"}


def _mounts(configured: list[Path] | None) -> list[str]:
    if configured is not None:
        return [str(p) for p in configured]
    return sorted(
        {p.mountpoint for p in psutil.disk_partitions(all=False) if p.fstype not in _SKIP_FS}
    ) or ["/"]


def sample(configured: list[Path] | None) -> Resources:
    """Blocking (a hung mount blocks it): call through agent.blocking. A mount that cannot
    be read is left out, not fatal."""
    mem = psutil.virtual_memory()
    disks = []
    for mount in _mounts(configured):
        try:
            du = psutil.disk_usage(mount)
        except OSError:
            continue
        disks.append(
            DiskUsage(
                mount=mount,
                total_bytes=du.total,
                free_bytes=du.free,
                used_ratio=round(du.percent / 100.0, 4),
            )
        )
    return Resources(
        sampled_at=time.time(),
        cpu_ratio=round(psutil.cpu_percent(interval=None) / 100.0, 4),
        load1=os.getloadavg()[0],
        memory_total_bytes=mem.total,
        memory_used_bytes=mem.total - mem.available,
        memory_used_ratio=round(1 - mem.available / mem.total, 4) if mem.total else None,
        disks=disks,
    )


class HostMetrics:
    """The host's `hadeck_host_*` series, registered by the subsystem that samples them."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.cpu = Gauge("hadeck_host_cpu_usage_ratio", "Host CPU busy, 0 to 1.", registry=r)
        self.load1 = Gauge("hadeck_host_load1", "Host 1-minute load average.", registry=r)
        self.mem_used = Gauge("hadeck_host_memory_used_bytes", "Host memory in use.", registry=r)
        self.mem_total = Gauge("hadeck_host_memory_total_bytes", "Host memory in all.", registry=r)
        self.disk_free = Gauge(
            "hadeck_host_disk_free_bytes", "Free bytes per mount.", ["mount"], registry=r
        )
        self.disk_size = Gauge(
            "hadeck_host_disk_size_bytes", "Size in bytes per mount.", ["mount"], registry=r
        )

    def set(self, got: Resources) -> None:
        self.cpu.set(got.cpu_ratio or 0.0)
        self.load1.set(got.load1 or 0.0)
        self.mem_used.set(got.memory_used_bytes or 0)
        self.mem_total.set(got.memory_total_bytes or 0)
        for d in got.disks:
            self.disk_free.labels(d.mount).set(d.free_bytes)
            self.disk_size.labels(d.mount).set(d.total_bytes)


EMPTY = Resources(
    sampled_at=None,
    cpu_ratio=None,
    load1=None,
    memory_total_bytes=None,
    memory_used_bytes=None,
    memory_used_ratio=None,
    disks=[],
)


class HostResources(Subsystem):
    """Samples the host's resources every `resources.interval`, on threads of its own
    (agent/blocking.py) so a hung mount delays nothing else."""

    name = "resources"
    sections = ("resources",)

    def __init__(self, core: Core, cfg: AgentConfig) -> None:
        super().__init__(core, cfg)
        self.latest: Resources = EMPTY
        self.metrics = HostMetrics(core.metrics.registry)
        self._sampling = Blocking()
        self.jobs = JobSet(core.scheduler, self.name, core.events)
        self._timing = _timing(cfg)

    def start(self) -> None:
        self.jobs.replace(
            [Job("sample", self._sample, self._timing, {"max_instances": 1, "coalesce": True})]
        )

    async def stop(self) -> None:
        self.jobs.clear()

    def prepare(self, new: AgentConfig) -> Prepared:
        if not self.changed(new):
            return Unchanged()
        return _Reload(self, new, _timing(new))

    async def _sample(self) -> None:
        interval = self.config.resources.interval
        try:
            # Below the interval: a hung sample must end before the next run falls due.
            async with asyncio.timeout(interval / 2):
                got = await self._sampling.call(partial(sample, self.config.resources.mounts))
        except TimeoutError:
            log.warning("host resources: no sample within %gs (a hung mount?)", interval / 2)
            return
        except StillBlocked as exc:
            log.warning("host resources: %s", exc)
            return
        self.latest = got
        self.metrics.set(got)


def _timing(cfg: AgentConfig) -> Timing:
    """Sampled at once on start and after a reload that changed the interval."""
    return Timing.of("resources.interval", lambda: every(cfg.resources.interval), in_seconds)


@dataclass
class _Reload:
    owner: HostResources
    new: AgentConfig
    timing: Timing
    summary: dict[str, Any] = field(default_factory=dict)
    headline: str = ""

    async def apply(self) -> None:
        self.owner.config, self.owner._timing = self.new, self.timing
        self.owner.start()
