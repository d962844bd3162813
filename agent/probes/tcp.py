"""TCP probe: a connection is accepted, then closed at once."""

from __future__ import annotations

from agent.config import TcpProbe
from agent.probes import net
from agent.probes.base import Outcome, Probe, os_reason


class TcpCheck(Probe):
    kind = "tcp"

    def __init__(self, cfg: TcpProbe) -> None:
        self.cfg = cfg

    async def check(self) -> Outcome:
        try:
            sock = await net.connect(self.cfg.host, self.cfg.port)
        except OSError as exc:
            return Outcome(False, f"connect {self.cfg.host}:{self.cfg.port}: {os_reason(exc)}")
        sock.close()
        return Outcome(True, f"connected to {self.cfg.host}:{self.cfg.port}")
