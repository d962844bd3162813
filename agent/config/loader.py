"""Reading a config file: YAML with safe types only, a key given twice refused."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from agent.config.errors import ConfigError, Problem


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice is an error: with plain YAML the last one
    wins silently, and two probes with the same name would quietly become one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str) -> Any:
    """YAML as config files need it: safe types only, duplicate keys refused."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """A YAML file's content; an unreadable file or invalid YAML is a ConfigError naming it."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(file, "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem(file, "", "not UTF-8 text")]) from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(file, "", f"invalid YAML: {where}{problem}")]) from None
    return data
