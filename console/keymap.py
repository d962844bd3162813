"""Remapping keys by action id (`keymap.yaml`), as Posting does.

The file maps binding ids to comma-separated keys, e.g. `fleet.filter: "/,f"`.
An unknown id is an error naming the file and the id, so a typo never leaves
an operator without the key they expect.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from agent.config import ConfigError, Problem


def load(path: Path, known: set[str]) -> dict[str, str]:
    file = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError([Problem(file, "", f"cannot read: {exc.strerror}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, "", f"invalid YAML: {exc}")]) from None
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, "", "expected a mapping of binding id to keys")])
    problems = []
    keymap: dict[str, str] = {}
    for key, value in data.items():
        if key not in known:
            problems.append(
                Problem(file, str(key), f"unknown binding id (known: {', '.join(sorted(known))})")
            )
        elif not isinstance(value, str) or not value.strip():
            problems.append(Problem(file, str(key), "expected keys as a string, e.g. 'ctrl+r'"))
        else:
            keymap[key] = value
    if problems:
        raise ConfigError(problems)
    return keymap
