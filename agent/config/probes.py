"""The `probes` section: one model per probe kind, told apart by `kind`."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from agent.config.base import (
    Argv,
    ConfigPath,
    Count,
    Duration,
    Host,
    Issue,
    Label,
    PositiveDuration,
    Size,
    Strict,
    check_names,
    check_regex,
    http_url,
)
from agent.ticks import TICK

# The probe frames its own request: one of these from the config would break it.
_FRAMING_HEADERS = {"content-length", "transfer-encoding", "connection"}
# RFC 9110 token characters.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class FlapSection(Strict):
    """Too many state changes within `window` mark a probe as flapping."""

    window: PositiveDuration = 300.0
    changes: Count = Field(default=6, ge=2)


class ProbeBase(Strict):
    interval: Duration = 10.0
    timeout: Duration = 5.0
    jitter: Duration = 0.0
    fall: int = Field(default=3, ge=1, le=100)
    rise: int = Field(default=2, ge=1, le=100)
    flap: FlapSection = FlapSection()

    @model_validator(mode="after")
    def _timing(self) -> ProbeBase:
        if self.interval < TICK:
            # Runs are aligned to the tick: a shorter interval would lose runs to it.
            raise ValueError(f"interval must be at least {TICK * 1000:g}ms (the agent's tick)")
        if self.timeout <= 0 or self.timeout > self.interval:
            raise ValueError(
                f"timeout ({self.timeout:g}s) must be above 0 and at most the interval "
                f"({self.interval:g}s), so a probe can never pile up behind itself"
            )
        if self.jitter >= self.interval:
            raise ValueError("jitter must be smaller than the interval")
        return self


class HttpProbe(ProbeBase):
    kind: Literal["http"]
    url: str
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS"] = "GET"
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200], min_length=1
    )
    body_regex: str | None = None
    tls_verify: bool = True
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)

    @field_validator("headers")
    @classmethod
    def _header_syntax(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in _FRAMING_HEADERS:
                raise ValueError(f"header {name!r} is set by the probe itself")
            # A field value is visible ASCII, spaces and tabs (RFC 9110): no line break to
            # split the request, no ESC to reach a terminal that shows the config.
            if (
                not text.isascii()
                or text != text.strip()
                or any((ord(c) < 0x20 and c != "\t") or c == "\x7f" for c in text)
            ):
                raise ValueError(
                    f"header {name!r}: a value must be ASCII, without line breaks or other "
                    "control characters, and not start or end with white space"
                )
        return value

    @field_validator("body_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return check_regex(value)


class TcpProbe(ProbeBase):
    kind: Literal["tcp"]
    host: Host
    port: int = Field(ge=1, le=65535)


class CommandProbe(ProbeBase):
    kind: Literal["command"]
    command: Argv
    expect_exit: int = Field(default=0, ge=0, le=255)
    stdout_regex: str | None = None

    @field_validator("stdout_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return check_regex(value)


class ProcessProbe(ProbeBase):
    kind: Literal["process"]
    name: Label | None = None  # as /proc/PID/comm shows it: spaces inside are allowed
    pidfile: ConfigPath | None = None

    @model_validator(mode="after")
    def _one_way(self) -> ProcessProbe:
        if (self.name is None) == (self.pidfile is None):
            raise ValueError("give exactly one of `name` or `pidfile`")
        return self


class DiskProbe(ProbeBase):
    kind: Literal["disk"]
    path: ConfigPath
    min_free: Size | None = None
    min_free_percent: float | None = Field(default=None, gt=0, lt=100)

    @model_validator(mode="after")
    def _threshold(self) -> DiskProbe:
        if self.min_free is None and self.min_free_percent is None:
            raise ValueError("give `min_free` (e.g. 5GiB) and/or `min_free_percent`")
        return self


class FileAgeProbe(ProbeBase):
    kind: Literal["file_age"]
    path: ConfigPath
    max_age: PositiveDuration


class SystemdProbe(ProbeBase):
    kind: Literal["systemd"]
    unit: str = Field(min_length=1)


ProbeConfig = Annotated[
    HttpProbe | TcpProbe | CommandProbe | ProcessProbe | DiskProbe | FileAgeProbe | SystemdProbe,
    Field(discriminator="kind"),
]


def references(probes: dict[str, Any]) -> list[Issue]:
    """Probes refer to nothing else; their names follow the naming rule."""
    return check_names("probes", probes)
