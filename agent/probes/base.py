"""What every probe kind shares: one async check that returns a result, never raises.

The runner (agent/probes/runner.py) enforces the timeout around `check`, so a
kind only has to say what "healthy" means for its target.
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """What a check found: healthy or not, and a one-line reason an operator can read."""

    ok: bool
    detail: str
    available: bool = True  # False: this probe cannot run on this host (e.g. no systemd)


class Probe(ABC):
    kind: str

    @abstractmethod
    async def check(self) -> Outcome:
        """Look at the target once. Exceptions are turned into failures by the runner."""


def os_reason(exc: OSError) -> str:
    """The system's words for a failed socket call: "Connection refused", not asyncio's
    "Connect call failed ('10.0.0.5', 80)"; resolver errors keep their own text."""
    if isinstance(exc, socket.gaierror) or not exc.errno or exc.errno < 0:
        return exc.strerror or str(exc)
    return os.strerror(exc.errno)
