"""Config problems as lines an operator can act on: the file, the dotted path, what is wrong."""

from __future__ import annotations

from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from agent.config.base import Issue


def printable(text: str) -> str:
    """`text` safe for a terminal and a log: every character that is not printable (controls
    such as ESC, line breaks, bidi overrides, lone surrogates) written as its escape, so a
    hostile key can neither drive the terminal nor split one problem into two lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, printable as one line (escaped: see `printable`)."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return printable(
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


M = TypeVar("M", bound=BaseModel)


def validate_as(model: type[M], data: Any, file: str, context: dict[str, Any] | None = None) -> M:
    """`model` validated from parsed YAML; every problem is a line of the ConfigError."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(problems(exc, model, file)) from None


def problems(exc: ValidationError, model: type[BaseModel], file: str) -> list[Problem]:
    """pydantic's errors for `model` as Problems: paths as the operator wrote them, messages
    in the operator's words, cross-field problems (ReferenceErrors) each with its own path."""
    found: list[Problem] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        ctx_error = (error.get("ctx") or {}).get("error")
        if isinstance(ctx_error, ReferenceErrors):
            for where, msg in ctx_error.problems:
                found.append(Problem(file, _dotted(_written(model, loc + where)[0]), msg))
        else:
            written, at = _written(model, loc)
            found.append(Problem(file, _dotted(written), _message(error, at)))
    return found


def _dotted(parts: list[str | int]) -> str:
    return ".".join(str(p) for p in parts if not str(p).startswith("function-"))


def _message(error: ErrorDetails, at: _Union | None) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required field is missing"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        ctx = error.get("ctx") or {}
        key = at.key if at else str(ctx.get("discriminator", "kind")).strip("'")
        tags = sorted(at.members) if at else _quoted(str(ctx.get("expected_tags", "")))
        if kind == "union_tag_invalid":
            return f"unknown {key} {ctx.get('tag')!r} (expected one of: {', '.join(tags)})"
        return f"missing `{key}` (one of: {', '.join(tags)})"
    return str(error["msg"]).removeprefix("Value error, ")


def _quoted(text: str) -> list[str]:
    return sorted(t.strip().strip("'") for t in text.split(",") if t.strip())


@dataclass(frozen=True)
class _Union:
    """A discriminated union met on the way down a path: its key and its members by tag."""

    key: str
    members: dict[str, Any]


def _written(model: type[BaseModel], loc: tuple[str | int, ...]) -> tuple[list[str | int], Any]:
    """The path as written in the file, and the union the path ends at (if it does).

    A discriminated union puts the chosen tag into pydantic's path (`probes.web.http.url`):
    the operator wrote `probes.web.url`, so the tag is left out. Which parts are tags is
    read from the models along the path, so this holds for every union, wherever it is.
    """
    written: list[str | int] = []
    node: Any = _resolve(model, None)
    for part in loc:
        if isinstance(node, _Union) and part in node.members:
            node = _resolve(node.members[part], None)
            continue
        written.append(part)
        node = _child(node, part)
    return written, node if isinstance(node, _Union) else None


def _resolve(tp: Any, key: str | None) -> Any:
    """A type without its Annotated wrapper and `None` option; a tagged union as a _Union."""
    while get_origin(tp) is Annotated:
        tp, *meta = get_args(tp)
        for m in meta:
            if isinstance(getattr(m, "discriminator", None), str):
                key = m.discriminator
    if get_origin(tp) in (Union, UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if key is not None:
            members: dict[str, Any] = {}
            for option in options:
                option, _ = _unannotated(option)
                field = getattr(option, "model_fields", {}).get(key)
                for tag in get_args(field.annotation) if field else ():
                    members[str(tag)] = option
            return _Union(key, members)
        if len(options) == 1:
            return _resolve(options[0], None)
    return tp


def _unannotated(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    if get_origin(tp) is Annotated:
        base, *meta = get_args(tp)
        return base, tuple(meta)
    return tp, ()


def _child(node: Any, part: str | int) -> Any:
    """The type one step down from `node` (a model's field, a mapping's value, a list item)."""
    if isinstance(node, type) and issubclass(node, BaseModel):
        field = node.model_fields.get(str(part))
        if field is None:
            return None
        key = field.discriminator if isinstance(field.discriminator, str) else None
        return _resolve(field.annotation, key)
    origin = get_origin(node)
    if origin is dict:
        return _resolve(get_args(node)[1], None)
    if origin is list:
        return _resolve(get_args(node)[0], None)
    return None
