"""Reading a config file: YAML with safe types only, a key given twice refused, and
nothing a hostile or mistaken file can do to the reader (the agent's config, a SIGHUP
reload, the console's inventory all come through here).

- Only a regular file of at most MAX_BYTES is read: a FIFO would block the reader
  for ever, /dev/zero never ends, a device may act when opened (a watchdog arms).
- Nesting is limited to MAX_DEPTH levels (the YAML composer recurses once per level),
  and the values, with aliases expanded, to MAX_VALUES (ten aliases of ten aliases of
  ... are a billion values for the validator).
- Mapping keys are single values (a list as a key cannot be looked up), and no key has
  a control character; no string has a NUL (no path, argument or environment variable
  can carry one) or a lone surrogate (it cannot be written as UTF-8: not to a terminal,
  a log, the store).
"""

from __future__ import annotations

import os
import stat
from typing import Any

import yaml

from agent.config.errors import ConfigError, Problem

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_VALUES = 1024 * 1024
_MERGE = "tag:yaml.org,2002:merge"
_NOT_REGULAR = {
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


class _ConfigLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice is an error (with plain YAML the last one
    wins silently, and two probes with the same name would quietly become one), a key must
    be a single value, and nesting is bounded. Merge keys (`<<: *base`) work as in safe_load:
    the mapping's own keys override the merged ones."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"nested more than {MAX_DEPTH} levels deep",
                self.peek_event().start_mark,  # type: ignore[no-untyped-call]
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    "a key must be a single value, not a list or a mapping",
                    key_node.start_mark,
                )
            key = "<<" if key_node.tag == _MERGE else self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str) -> Any:
    """YAML as config files need it: safe types only, duplicate keys refused, bounded depth."""
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 (a SafeLoader subclass)


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """A YAML file's content; a file that cannot be read or parsed is a ConfigError naming it."""
    file = str(path)
    text = _read_text(path, file)
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(file, "", f"invalid YAML: {where}{problem}")]) from None
    except RecursionError:  # MAX_DEPTH keeps the composer well away; this is the last guard
        raise ConfigError([Problem(file, "", "invalid YAML: nested too deeply")]) from None
    problems = _check_values(data, file)
    if problems:
        raise ConfigError(problems)
    return data


def _read_text(path: str | os.PathLike[str], file: str) -> str:
    def refuse(why: str) -> ConfigError:
        return ConfigError([Problem(file, "", f"cannot read: {why}")])

    try:
        kind = _not_regular(os.stat(path).st_mode)
        if kind:
            raise refuse(f"{kind}, not a regular file")
        # Non-blocking: if the path became a FIFO since the stat, opening must not wait.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise refuse(exc.strerror or str(exc)) from None
    try:
        kind = _not_regular(os.fstat(fd).st_mode)
        if kind:
            raise refuse(f"{kind}, not a regular file")
        chunks, size = [], 0
        while size <= MAX_BYTES and (chunk := os.read(fd, MAX_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise refuse(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        raise ConfigError(
            [
                Problem(
                    file, "", f"larger than 1 MiB ({MAX_BYTES} bytes), the limit for a config file"
                )
            ]
        )
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([Problem(file, "", "not UTF-8 text")]) from None


def _not_regular(mode: int) -> str | None:
    return None if stat.S_ISREG(mode) else _NOT_REGULAR.get(stat.S_IFMT(mode), "not a file")


def _check_values(data: Any, file: str) -> list[Problem]:
    """Every string and key, in file order, walked without recursion and with aliases
    counted as often as they are used (which is how the validator will see them)."""
    problems: list[Problem] = []
    stack: list[tuple[Any, tuple[str, ...]] | Problem] = [(data, ())]
    count = 0
    while stack:
        item = stack.pop()
        if isinstance(item, Problem):
            problems.append(item)
            continue
        value, where = item
        count += 1
        if count > MAX_VALUES:
            return [
                Problem(
                    file,
                    "",
                    f"more than {MAX_VALUES} values once aliases are expanded "
                    "(aliases of aliases?)",
                )
            ]
        children: list[tuple[Any, tuple[str, ...]] | Problem] = []
        if isinstance(value, str):
            if why := _bad_text(value):
                problems.append(Problem(file, ".".join(where), why))
        elif isinstance(value, dict):
            for key, child in value.items():
                at = (*where, str(key))
                if isinstance(key, str) and (why := _bad_text(key) or _control(key)):
                    children.append(Problem(file, ".".join(at), f"a key {why}"))
                else:
                    children.append((child, at))
        elif isinstance(value, list):
            children = [(child, (*where, str(i))) for i, child in enumerate(value)]
        stack.extend(reversed(children))
    return problems


def _bad_text(text: str) -> str | None:
    if "\0" in text:
        return "contains a NUL character"
    if any("\ud800" <= c <= "\udfff" for c in text):
        return "contains a lone surrogate (not a Unicode character: it cannot be written as UTF-8)"
    return None


def _control(text: str) -> str | None:
    return None if text.isprintable() else "contains a control or other non-printable character"
