"""Host resources (CPU, memory, load, disk per mount) sampled with psutil off the event loop."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil

from agent.schema import DiskUsage, Resources

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


EMPTY = Resources(
    sampled_at=None,
    cpu_ratio=None,
    load1=None,
    memory_total_bytes=None,
    memory_used_bytes=None,
    memory_used_ratio=None,
    disks=[],
)
