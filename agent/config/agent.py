"""The `agent` and `audit` sections: who this host is and where the agent keeps its state."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field

from agent.config.base import ConfigPath, Label, Strict


class AgentSection(Strict):
    name: Label = Field(default_factory=socket.gethostname)
    state_dir: ConfigPath = Path("/var/lib/hadeck")
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class AuditSection(Strict):
    path: ConfigPath | None = None
