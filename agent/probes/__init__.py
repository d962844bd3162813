"""Probe kinds, one module each; `build` turns a probe's config into its check."""

from __future__ import annotations

from agent.config import (
    CommandProbe,
    DiskProbe,
    FileAgeProbe,
    HttpProbe,
    ProbeConfig,
    ProcessProbe,
    SystemdProbe,
    TcpProbe,
)
from agent.probes.base import Outcome, Probe
from agent.probes.command import CommandCheck
from agent.probes.disk import DiskCheck
from agent.probes.file_age import FileAgeCheck
from agent.probes.http import HttpCheck
from agent.probes.process import ProcessCheck
from agent.probes.systemd import SystemdCheck
from agent.probes.tcp import TcpCheck

__all__ = ["Outcome", "Probe", "build"]


def build(cfg: ProbeConfig) -> Probe:
    match cfg:
        case HttpProbe():
            return HttpCheck(cfg)
        case TcpProbe():
            return TcpCheck(cfg)
        case CommandProbe():
            return CommandCheck(cfg)
        case ProcessProbe():
            return ProcessCheck(cfg)
        case DiskProbe():
            return DiskCheck(cfg)
        case FileAgeProbe():
            return FileAgeCheck(cfg)
        case SystemdProbe():
            return SystemdCheck(cfg)
    raise AssertionError(f"no probe for {cfg!r}")
