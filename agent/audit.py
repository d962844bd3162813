"""Append-only, hash-chained audit log of every action, one JSON object per line.

Each record carries the SHA-256 of the previous record (`prev`) and its own
`hash` over its canonical JSON, so editing, deleting or reordering any record
breaks the chain from that point on; `verify` names the first broken record.
The log is opened O_APPEND and each record is written with one write() and
fsync'd before the action's result is returned.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def _digest(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Broken:
    line: int
    reason: str


def read(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line number, record or None when unparsable, raw line) for each line."""
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                record = None
            yield number, record if isinstance(record, dict) else None, raw


def _newest_first(path: Path, block: int = 1 << 16) -> Iterator[dict[str, Any]]:
    """The records that parse, from the end of the file back, read in blocks: the newest
    records of a log that has grown for years cost no more than in a new one."""
    with path.open("rb") as fh:
        pos, rest = fh.seek(0, os.SEEK_END), b""
        while pos > 0:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            lines = (fh.read(step) + rest).split(b"\n")
            rest = lines.pop(0)  # maybe the end of a line that starts in the block before
            yield from _records(reversed(lines))
        yield from _records([rest])


def _records(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    for raw in lines:
        try:  # bad UTF-8 replaced, as a forward read does: the record still counts
            record = json.loads(raw.decode("utf-8", errors="replace"))
        except ValueError:  # a cut or damaged line; `verify` names it
            continue
        if isinstance(record, dict) and isinstance(record.get("seq"), int):
            yield record


def verify(path: Path) -> tuple[int, Broken | None]:
    """Check the whole chain; returns (records checked, first broken record or None)."""
    prev, seq, count = GENESIS, 0, 0
    for number, record, raw in read(path):
        if record is None:
            reason = "not a JSON object" if raw.endswith("\n") else "truncated record"
            return count, Broken(number, reason)
        if record.get("prev") != prev:
            return count, Broken(number, "prev does not match the hash of the record before it")
        if record.get("seq") != seq + 1:
            return count, Broken(number, f"seq {record.get('seq')!r}, expected {seq + 1}")
        if record.get("hash") != _digest(record):
            return count, Broken(number, "hash does not match the record's content")
        prev, seq, count = record["hash"], record["seq"], count + 1
    return count, None


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


class AuditLog:
    """Writer side; thread-safe, so API handlers and recovery share one chain."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._prev, self._seq = GENESIS, 0
        if path.exists():
            for record in _newest_first(path):
                if isinstance(record.get("hash"), str):
                    self._prev, self._seq = record["hash"], record["seq"]
                    break
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        if path.stat().st_size and not _ends_with_newline(path):
            # A crash cut the last record short. End that line so new records stay whole;
            # `verify` will name the cut record, which is the truth.
            os.write(self._fd, b"\n")

    def append(
        self,
        actor: str,
        action: str,
        target: str,
        params: dict[str, Any],
        result: dict[str, Any],
    ) -> dict[str, Any]:
        with self._lock:
            record: dict[str, Any] = {
                "seq": self._seq + 1,
                "ts": round(time.time(), 6),
                "actor": actor,
                "action": action,
                "target": target,
                "params": params,
                "result": result,
                "prev": self._prev,
            }
            record["hash"] = _digest(record)
            line = json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"
            os.write(self._fd, line.encode("utf-8"))
            os.fsync(self._fd)
            self._prev, self._seq = record["hash"], record["seq"]
            return record

    def tail(self, since: int = 0, limit: int = 200) -> list[dict[str, Any]]:
        """Records with seq > since, oldest first: the first `limit` of them, or the newest
        `limit` when since is 0. Read from the end back to `since` (records are in seq
        order), so a console following the log reads only what is new."""
        newest: list[dict[str, Any]] = []
        for record in _newest_first(self.path):
            if record["seq"] <= since or (not since and len(newest) == limit):
                break
            newest.append(record)
        return newest[::-1][:limit]

    def close(self) -> None:
        os.close(self._fd)
