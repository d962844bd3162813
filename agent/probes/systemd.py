"""systemd probe: a unit is active, asked through `systemctl is-active`.

Where the host has no systemd (containers, the demo), the probe reports
itself unavailable instead of failing, so it never triggers a recovery.
"""

from __future__ import annotations

import os
import shutil

from agent import commands
from agent.config import SystemdProbe
from agent.probes.base import Outcome, Probe


def systemd_running() -> bool:
    return os.path.isdir("/run/systemd/system") and shutil.which("systemctl") is not None


class SystemdCheck(Probe):
    kind = "systemd"

    def __init__(self, cfg: SystemdProbe) -> None:
        self.cfg = cfg

    async def check(self) -> Outcome:
        if not systemd_running():
            return Outcome(False, "systemd is not running on this host", available=False)
        result = await commands.run(
            ["systemctl", "is-active", "--", self.cfg.unit], self.cfg.timeout
        )
        state = result.output.strip() or result.summary()
        return Outcome(result.exit_code == 0, f"{self.cfg.unit}: {state}")
