"""The agent's configuration: YAML on disk, validated by the pydantic models of this package.

Every problem is reported as one line naming the file, the dotted path of the
field and what is wrong, so `hadeck-agent check-config` and a failed SIGHUP
reload say exactly where to look. Unknown keys are errors: a typo such as
`intervall:` must never be silently ignored on a production host.

One module per section (`agent`, `api`, `probes`, `services`, `groups`, `resources`,
`retention`), each checking the references of its own section; `loader` reads
files, `errors` turns pydantic's errors into those lines. Everything other modules
use is importable from `agent.config` itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from agent.config import groups, probes, services
from agent.config.agent import AgentSection, AuditSection
from agent.config.api import ApiSection
from agent.config.base import (
    Argv,
    CommandStep,
    ConfigPath,
    Count,
    Duration,
    Label,
    Name,
    PositiveDuration,
    Printable,
    Schedule,
    Secret,
    Size,
    Strict,
    parse_duration,
    parse_size,
    read_secret,
)
from agent.config.errors import ConfigError, Problem, ReferenceErrors, printable, validate_as
from agent.config.groups import Group, GroupHooks, LeaseStoreSection
from agent.config.loader import parse_yaml, read_yaml
from agent.config.probes import (
    CommandProbe,
    DiskProbe,
    FileAgeProbe,
    FlapSection,
    HttpProbe,
    ProbeBase,
    ProbeConfig,
    ProcessProbe,
    SystemdProbe,
    TcpProbe,
)
from agent.config.resources import ResourcesSection
from agent.config.retention import RetentionSection
from agent.config.services import Backoff, RecoveryPolicy, Runbook, Service

__all__ = [
    "AgentConfig",
    "AgentSection",
    "ApiSection",
    "Argv",
    "AuditSection",
    "Backoff",
    "CommandProbe",
    "CommandStep",
    "ConfigError",
    "ConfigPath",
    "Count",
    "DiskProbe",
    "Duration",
    "FileAgeProbe",
    "FlapSection",
    "Group",
    "GroupHooks",
    "HttpProbe",
    "Label",
    "LeaseStoreSection",
    "Name",
    "PositiveDuration",
    "Printable",
    "ProbeBase",
    "ProbeConfig",
    "Problem",
    "ProcessProbe",
    "RecoveryPolicy",
    "ResourcesSection",
    "RetentionSection",
    "Runbook",
    "Schedule",
    "Secret",
    "Service",
    "Size",
    "Strict",
    "SystemdProbe",
    "TcpProbe",
    "load",
    "parse_duration",
    "parse_size",
    "parse_yaml",
    "printable",
    "read_secret",
    "read_yaml",
    "validate",
    "validate_as",
]


class AgentConfig(Strict):
    agent: AgentSection = AgentSection()
    api: ApiSection = ApiSection()
    resources: ResourcesSection = ResourcesSection()
    retention: RetentionSection = RetentionSection()
    audit: AuditSection = AuditSection()
    probes: dict[str, ProbeConfig] = Field(default_factory=dict)
    services: dict[str, Service] = Field(default_factory=dict)
    runbooks: dict[str, Runbook] = Field(default_factory=dict)
    lease_store: LeaseStoreSection = LeaseStoreSection()
    groups: dict[str, Group] = Field(default_factory=dict)

    @property
    def audit_path(self) -> Path:
        return self.audit.path or self.agent.state_dir / "audit.jsonl"

    @property
    def token_source(self) -> Secret:
        return self.api.token or Secret(file=self.agent.state_dir / "token")

    @model_validator(mode="after")
    def _references(self) -> AgentConfig:
        problems = [
            *probes.references(self.probes),
            *services.references(self.services, self.runbooks, self.probes),
            *groups.references(
                self.groups,
                self.lease_store,
                self.services,
                self.agent.name,
                self.api.public_listen,
            ),
        ]
        if problems:
            raise ReferenceErrors(problems)
        return self


def validate(data: Any, file: str) -> AgentConfig:
    """Validate already-parsed YAML; raises ConfigError listing every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, "", "the top level must be a mapping of sections")])
    return validate_as(AgentConfig, data, file, {"base": Path(file).parent.absolute()})


def load(path: str | os.PathLike[str]) -> AgentConfig:
    """Read, parse and validate a config file; every failure is a ConfigError."""
    return validate(read_yaml(path), str(path))
