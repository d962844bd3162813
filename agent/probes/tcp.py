"""TCP probe: a connection is accepted, then closed at once."""

from __future__ import annotations

import asyncio
import contextlib

from agent.config import TcpProbe
from agent.probes.base import Outcome, Probe, os_reason


class TcpCheck(Probe):
    kind = "tcp"

    def __init__(self, cfg: TcpProbe) -> None:
        self.cfg = cfg

    async def check(self) -> Outcome:
        try:
            _, writer = await asyncio.open_connection(self.cfg.host, self.cfg.port)
        except OSError as exc:
            return Outcome(False, f"connect {self.cfg.host}:{self.cfg.port}: {os_reason(exc)}")
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return Outcome(True, f"connected to {self.cfg.host}:{self.cfg.port}")
