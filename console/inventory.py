"""The inventory: which hosts the console shows and how it reaches each one's agent.

YAML, validated like the agent config (same error lines: file, dotted field,
message; unknown keys are errors), because an operator who mistypes a key at
3 a.m. must be told, not shown an empty fleet.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from agent.config import (
    ConfigError,
    Duration,
    Label,
    Printable,
    Problem,
    Strict,
    read_yaml,
    validate_as,
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # fullmatch: `$` would allow a "\n"
DEFAULT_TOKEN_FILE = Path("/var/lib/hadeck/token")


class Jump(Strict):
    """A jump host (like `ssh -J`); its key is checked against the same known_hosts."""

    address: str
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = None
    key_file: Path | None = None


class SshTarget(Strict):
    address: str
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = None
    #: None means: keys from ssh-agent and the usual ~/.ssh/id_* files.
    key_file: Path | None = None
    jump: Jump | None = None
    known_hosts: Path | None = None
    token_file: Path = DEFAULT_TOKEN_FILE


class LocalTarget(Strict):
    url: str
    token_file: Path | None = None

    @model_validator(mode="after")
    def _http(self) -> LocalTarget:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return self


class Host(Strict):
    labels: dict[str, Printable] = {}
    agent_port: int = Field(default=9440, ge=1, le=65535)
    ssh: SshTarget | None = None
    local: LocalTarget | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Host:
        if (self.ssh is None) == (self.local is None):
            raise ValueError("give exactly one of `ssh` or `local`")
        return self


class Polling(Strict):
    interval: Duration = 2.0
    timeout: Duration = 5.0
    #: A host not heard from for this long is shown as stale.
    stale_after: Duration = 10.0
    #: How many hosts are polled at once.
    concurrency: int = Field(default=16, ge=1, le=256)


#: HAProxy's rule for backend and server names (agent/haproxy.py checks it again).
_HAPROXY_NAME = re.compile(r"[A-Za-z0-9._:-]{1,256}")  # fullmatch, as _NAME


class Haproxy(Strict):
    """HAProxy's runtime API as the console reaches it, for draining a group's members.

    The socket is on the machine the console runs on (HAProxy there, or the socket
    forwarded to it); the servers of each backend are named after the group's member ids.
    """

    socket: Path
    timeout: Duration = 3.0
    #: HA group name -> the HAProxy backend that routes to its primary.
    backends: dict[str, str] = Field(min_length=1)

    @model_validator(mode="after")
    def _names(self) -> Haproxy:
        for group, backend in self.backends.items():
            if not _HAPROXY_NAME.fullmatch(backend):
                raise ValueError(
                    f"backends.{group}: {backend!r} is not an HAProxy backend name "
                    "(letters, digits, '.', '_', '-', ':')"
                )
        return self


class Inventory(Strict):
    #: Shown in the header in the warning colour, e.g. "production".
    environment: Label | None = None
    polling: Polling = Polling()
    hosts: dict[str, Host] = Field(min_length=1)
    #: Optional: lets the groups screen drain a member in HAProxy and make it ready again.
    haproxy: Haproxy | None = None

    @model_validator(mode="after")
    def _names(self) -> Inventory:
        bad = [n for n in self.hosts if not _NAME.fullmatch(n)]
        if bad:
            raise ValueError(f"host names must be letters, digits, '.', '_', '-': {bad[0]!r}")
        return self


def validate(data: Any, file: str) -> Inventory:
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, "", "the top level must be a mapping with `hosts`")])
    return validate_as(Inventory, data, file)


def load(path: str | os.PathLike[str]) -> Inventory:
    return validate(read_yaml(path), str(path))
