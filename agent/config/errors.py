"""Config problems as lines an operator can act on: the file, the dotted path, what is wrong."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic_core import ErrorDetails

from agent.config.base import Issue


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, printable as one line."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return (
            f"{self.file}: {self.path}: {self.message}"
            if self.path
            else f"{self.file}: {self.message}"
        )


class ConfigError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class ReferenceErrors(ValueError):
    """Cross-field problems, each with its own path (pydantic would give them all one)."""

    def __init__(self, problems: list[Issue]) -> None:
        super().__init__("; ".join(msg for _, msg in problems))
        self.problems = problems


_PROBE_KINDS = {"http", "tcp", "command", "process", "disk", "file_age", "systemd"}


def dotted(loc: tuple[str | int, ...]) -> str:
    parts = list(loc)
    # A discriminated union puts the chosen kind into the path (probes.web.http.url);
    # operators wrote probes.web.url, so that is what we print.
    if len(parts) > 2 and parts[0] == "probes" and parts[2] in _PROBE_KINDS:
        del parts[2]
    return ".".join(str(p) for p in parts if not str(p).startswith("function-"))


def message(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_invalid":
        kind_given = error["input"].get("kind") if isinstance(error["input"], dict) else None
        return f"unknown kind {kind_given!r} (expected one of: {', '.join(sorted(_PROBE_KINDS))})"
    if kind == "union_tag_not_found":
        return "missing `kind` (one of: " + ", ".join(sorted(_PROBE_KINDS)) + ")"
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")
