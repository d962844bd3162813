"""What every config section is built from: durations, sizes, paths, commands, secrets, names.

A section module imports these so that `5s`, `10GiB`, a relative path or an argv list
mean the same thing, and are refused for the same reasons, wherever they appear.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

from agent.cron import Cron

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # fullmatch: `$` would allow a "\n"
#: Longer is a typo (`1.0e+15`), and would overflow the scheduler's date arithmetic.
MAX_DURATION = 365 * 86400.0
#: SQLite's INTEGER: a count beyond it cannot be bound to a query.
MAX_COUNT = 2**63 - 1
# RFC 1123 host names.
_HOSTNAME = re.compile(
    r"(?=.{1,253}\.?\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}


def parse_duration(value: Any) -> float:
    """Seconds from `500ms`, `5s`, `2m`, `1h`, `7d` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s, 500ms or 2m")
    if isinstance(value, int) and value > MAX_DURATION:  # float() of a huge int overflows
        raise ValueError("a duration must be at most 365d (a year)")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"expected a duration such as 5s, 500ms or 2m, got {value!r}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds")
    if seconds > MAX_DURATION:
        raise ValueError(f"a duration must be at most 365d (a year), got {seconds:g}s")
    return seconds


def parse_size(value: Any) -> int:
    """Bytes from `10GiB`, `500MB` or a plain number of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 10GiB or 500MB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)):
        size = float(m.group(1)) * _SIZE_UNITS[m.group(2)]
        if not math.isfinite(size):
            raise ValueError("a size must be a finite number of bytes")
        return int(size)
    raise ValueError(f"expected a size such as 10GiB or 500MB, got {value!r}")


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _beside_config(value: Path, info: ValidationInfo) -> Path:
    """A relative path is read as relative to the config file's directory (as Prometheus
    does): the agent's working directory is `/` under systemd, a trap for `state_dir: state`."""
    base = (info.context or {}).get("base")
    return value if value.is_absolute() or base is None else base / value


ConfigPath = Annotated[Path, AfterValidator(_beside_config)]
# Windows, timeouts and periods: zero would mean a busy loop or an instant give-up.
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Size = Annotated[int, BeforeValidator(parse_size)]


def _argv(value: list[str]) -> list[str]:
    if not value[0] or value[0] != value[0].strip() or not value[0].isprintable():
        raise ValueError(
            f"the program {value[0]!r} is not a program name or path (empty, white space "
            "at an end, or control characters)"
        )
    return value


#: A command as argv: never a shell line; the program is named, the arguments are as given.
Argv = Annotated[list[str], Field(min_length=1), AfterValidator(_argv)]
Count = Annotated[int, Field(le=MAX_COUNT)]


def _printable(value: str) -> str:
    if not value.isprintable() or value != value.strip():
        raise ValueError(
            f"{value!r} is not printable text (no control characters, no white space at either end)"
        )
    return value


#: Text shown to people as it is (a label's value, an environment's name).
Printable = Annotated[str, AfterValidator(_printable)]
#: A name shown to people (a host's name in the console, events and metrics).
Label = Annotated[str, Field(min_length=1), AfterValidator(_printable)]


def _name(value: str) -> str:
    if not NAME.fullmatch(value):
        raise ValueError(NAME_RULE)
    return value


NAME_RULE = "names use letters, digits, '.', '_' and '-' only"
#: A name other configs, keys and routers use (a group's member id).
Name = Annotated[str, AfterValidator(_name)]


def _env_name(value: str) -> str:
    if "=" in value or not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError(
            f"{value!r} is not an environment variable name (no '=', white space or "
            "control characters)"
        )
    return value


def _host(value: str) -> str:
    if not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError(
            f"{value!r} is not a host name or address (white space or control characters)"
        )
    return value


#: A host to connect to, as the resolver takes it (a name or an IP literal).
Host = Annotated[str, Field(min_length=1), AfterValidator(_host)]


def http_url(value: str) -> str:
    """An http(s) URL the agent can send as written: ASCII, a host, a usable port."""
    if not value.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    if not value.isascii() or any(c.isspace() or ord(c) < 32 for c in value):
        raise ValueError(
            "write the URL in ASCII without spaces: percent-encode the path "
            "(%20) and give an international host name in its xn-- form"
        )
    url = urlsplit(value)
    if not url.hostname:
        raise ValueError(f"no host in {value!r}")
    try:
        port = url.port
    except ValueError as exc:
        raise ValueError(f"bad port in {value!r}: {exc}") from None
    if port == 0:
        raise ValueError(f"bad port in {value!r}: 0")
    return value


def check_address(value: str) -> str:
    """HOST:PORT where HOST is a host name or an IP address ([...] for IPv6), PORT 1-65535."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT with a port from 1 to 65535, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:  # `fd00::5:9441`: the address fd00::5 port 9441, or fd00::5:9441?
        raise ValueError(f"write an IPv6 address in brackets, [ADDRESS]:PORT, got {value!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{host!r} is not a host name or IP address") from None
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Secret(Strict):
    """A secret comes from a file or an environment variable, never inline."""

    file: ConfigPath | None = None
    env: Annotated[str, Field(min_length=1), AfterValidator(_env_name)] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of `file` or `env`")
        return self


class Schedule(Strict):
    """When a recurring job runs: `every: 6h`, or `cron: "15 3 * * *"` (UTC: a schedule
    means the same on every host, whatever its zone, and a DST change skips or doubles
    nothing). `catch_up`: a run that fell due while the agent was down runs once at start.
    """

    every: PositiveDuration | None = None
    cron: Cron | None = None
    catch_up: bool = True

    @model_validator(mode="after")
    def _one_kind(self) -> Schedule:
        if (self.every is None) == (self.cron is None):
            raise ValueError("give exactly one of `every` or `cron`")
        return self

    def describe(self) -> str:
        return f"cron {self.cron} UTC" if self.cron else f"every {self.every:g}s"


def read_secret(secret: Secret) -> str:
    """The secret's value; raises OSError or KeyError with a message that names the source."""
    if secret.env is not None:
        value = os.environ.get(secret.env)
        if not value:
            raise KeyError(f"environment variable {secret.env} is not set")
        return value.strip()
    assert secret.file is not None
    return secret.file.read_text(encoding="utf-8").strip()


class CommandStep(Strict):
    command: Argv
    timeout: PositiveDuration = 30.0


#: Deeper than this, a pattern that compiles here could exceed the recursion limit when the
#: agent compiles it from deeper in its stack; no sane probe pattern comes close.
MAX_REGEX_GROUPS = 100


def check_regex(value: str | None) -> str | None:
    """A pattern Python compiles, refused with the reason if not (never a traceback: a huge
    repetition count overflows, a deeply nested one recurses)."""
    if value is None:
        return value
    if _group_depth(value) > MAX_REGEX_GROUPS:
        raise ValueError(
            f"invalid regular expression: groups nested more than {MAX_REGEX_GROUPS} deep"
        )
    try:
        re.compile(value)
    except (re.error, OverflowError, RecursionError) as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return value


def _group_depth(pattern: str) -> int:
    """How deep `(` nest, outside character classes and escapes."""
    depth = deepest = i = 0
    in_class = False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 1
        elif in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            i += 1
            i += pattern[i : i + 1] == "^"
            i += pattern[i : i + 1] == "]"  # right after `[` or `[^`, a `]` is literal
            continue
        elif c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth -= 1
        i += 1
    return deepest


#: A cross-field problem: where (the dotted path's parts) and what.
Issue = tuple[tuple[str | int, ...], str]


def check_names(section: str, names: dict[str, Any]) -> list[Issue]:
    """The keys of a named section (probes, services, ...) follow the naming rule."""
    return [((section, name), NAME_RULE) for name in names if not NAME.fullmatch(name)]


def unknown(what: str, name: str, known: dict[str, Any]) -> str:
    choices = ", ".join(sorted(known)) or "none"
    return f"unknown {what} {name!r} (defined: {choices})"
