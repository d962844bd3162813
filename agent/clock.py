"""The clock of lease deadlines: seconds since boot, counting time suspended.

Lease deadlines must not move with the wall clock (an NTP step, an operator's `date`) and
must not stop while the machine is suspended: `time.monotonic()` (CLOCK_MONOTONIC) stops
during a suspend, so a host that wakes from one would believe in a lease that expired
elsewhere long ago. CLOCK_BOOTTIME never steps and counts the suspend. It is one clock
for every process of a machine, so the agent, its fencing processes and the SQLite lease
store (members on one machine) compare its readings directly; across machines only
durations are compared. A reading is meaningless after a reboot (see lease_sqlite).
"""

from __future__ import annotations

import time
from pathlib import Path

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def boot_id() -> str:
    """This boot's id: readings of `now()` are comparable only within one boot."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return "unknown"
