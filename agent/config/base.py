"""What every config section is built from: durations, sizes, paths, commands, secrets, names.

A section module imports these so that `5s`, `10GiB`, a relative path or an argv list
mean the same thing, and are refused for the same reasons, wherever they appear.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
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
    return seconds


def parse_size(value: Any) -> int:
    """Bytes from `10GiB`, `500MB` or a plain number of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 10GiB or 500MB")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)):
        return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
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
Argv = Annotated[list[str], Field(min_length=1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Secret(Strict):
    """A secret comes from a file or an environment variable, never inline."""

    file: ConfigPath | None = None
    env: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of `file` or `env`")
        return self


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
    return [
        ((section, name), "names use letters, digits, '.', '_' and '-' only")
        for name in names
        if not NAME.match(name)
    ]


def unknown(what: str, name: str, known: dict[str, Any]) -> str:
    choices = ", ".join(sorted(known)) or "none"
    return f"unknown {what} {name!r} (defined: {choices})"
