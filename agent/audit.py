"""Append-only, hash-chained audit log of every action, one JSON object per line.

Each record carries the SHA-256 of the previous record (`prev`) and its own
`hash` over its canonical JSON, so editing, deleting or reordering any record
breaks the chain from that point on; `verify` names the first broken record.
The log is opened O_APPEND and each record is written whole and fsync'd before
the action's result is returned; a write the disk cuts short is taken back
(truncated to where the record began) and tried again later, so a full disk
never leaves half a record in front of the next one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
MAX_PENDING_BYTES = 1 << 20

log = logging.getLogger("hadeck.audit")


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
    """Writer side; thread-safe, so API handlers, recovery and the journal's writer thread
    share one chain.

    A record is chained (seq, prev, hash) when it is made and then written; a record the
    disk does not take (full, failing) is kept in memory, in order, and written before
    any later one, so the records reach the disk as they were made and the chain on disk
    stays whole. The memory is bounded (`max_pending_bytes`): a record made beyond it is
    dropped before it is chained, and once the disk takes writes again a record
    `audit_records_dropped` says how many were and when, in the chain itself.
    """

    def __init__(self, path: Path, max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        self.path = path
        self.max_pending_bytes = max_pending_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._chain = threading.Lock()  # seq, prev and the queue: held for microseconds
        self._disk = threading.Lock()  # the file: held across a write and its fsync
        self._prev, self._seq = GENESIS, 0
        if path.exists():
            for record in _newest_first(path):
                if isinstance(record.get("hash"), str):
                    self._prev, self._seq = record["hash"], record["seq"]
                    break
        self.written_seq = self._seq
        self._pending: deque[tuple[dict[str, Any], bytes]] = deque()
        self._pending_bytes = 0
        self._dropped: list[float] = []  # when each record that could not be kept was made
        #: Why the last write failed, while records wait for the disk; None once they are on it.
        self.error: str | None = None
        #: Called (on the writing thread) each time a write fails; the journal counts it there.
        self.on_failure: Callable[[OSError], None] | None = None
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._cut = bool(path.stat().st_size) and not _ends_with_newline(path)
        if self._cut:
            # A crash cut the last record short. End that line so new records stay whole;
            # `verify` will name the cut record, which is the truth.
            with contextlib.suppress(OSError):
                os.write(self._fd, b"\n")
                self._cut = False

    @property
    def pending(self) -> int:
        """Records made but not on disk yet."""
        return len(self._pending)

    def make(
        self,
        actor: str,
        action: str,
        target: str,
        params: dict[str, Any],
        result: dict[str, Any],
    ) -> dict[str, Any] | None:
        """Chain a record and queue it for the disk; no I/O. None: it was dropped, the
        records already waiting for the disk fill the memory bound."""
        with self._chain:
            if self._pending_bytes >= self.max_pending_bytes:
                self._dropped.append(time.time())
                log.error(
                    "audit record dropped, %d bytes of records already wait for the disk (%s): %s",
                    self._pending_bytes,
                    self.error,
                    json.dumps(
                        {
                            "actor": actor,
                            "action": action,
                            "target": target,
                            "params": params,
                            "result": result,
                        },
                        sort_keys=True,
                        default=str,
                    ),
                )
                return None
            return self._chain_locked(actor, action, target, params, result)

    def _chain_locked(
        self,
        actor: str,
        action: str,
        target: str,
        params: dict[str, Any],
        result: dict[str, Any],
    ) -> dict[str, Any]:
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
        line = (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        self._pending.append((record, line))
        self._pending_bytes += len(line)
        self._prev, self._seq = record["hash"], record["seq"]
        return record

    def flush(self) -> str | None:
        """Write the queued records in order, each fsync'd; None once all are on disk,
        else why not (they stay queued, the next flush tries again)."""
        with self._disk:
            return self._flush_locked()

    def _flush_locked(self) -> str | None:
        while True:
            with self._chain:
                if not self._pending and self._dropped:
                    self._note_dropped_locked()
                if not self._pending:
                    self.error = None
                    return None
                record, line = self._pending[0]
            try:
                self._write(line)
            except OSError as exc:
                self.error = f"cannot write {self.path}: {exc.strerror or exc}"
                if self.on_failure is not None:
                    self.on_failure(exc)
                return self.error
            with self._chain:
                self._pending.popleft()
                self._pending_bytes -= len(line)
                self.written_seq = record["seq"]

    def _note_dropped_locked(self) -> None:
        dropped, self._dropped = self._dropped, []
        self._chain_locked(
            "hadeck-agent",
            "audit_records_dropped",
            str(self.path),
            {"count": len(dropped), "first_ts": dropped[0], "last_ts": dropped[-1]},
            {
                "ok": False,
                "detail": f"{len(dropped)} records were made while the records waiting for "
                f"the disk filled the memory kept for them ({self.max_pending_bytes} bytes); "
                "the agent's log has them",
            },
        )

    def _write(self, line: bytes) -> None:
        """One whole line, fsync'd, or nothing: a write the kernel cut short (ENOSPC part
        of the way through) is taken back, so no half record sits before the next one."""
        if self._fd < 0:
            raise OSError(errno.EBADF, "the audit log is closed")
        start = os.fstat(self._fd).st_size
        try:
            data = (b"\n" if self._cut else b"") + line
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                if n <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[n:]
            os.fsync(self._fd)
            self._cut = False
        except OSError:
            try:
                if os.fstat(self._fd).st_size != start:
                    os.ftruncate(self._fd, start)
            except OSError:
                # Cannot take it back: end the cut line before the next record, so that one
                # stays whole; `verify` names the cut line.
                self._cut = True
            raise

    def append(
        self,
        actor: str,
        action: str,
        target: str,
        params: dict[str, Any],
        result: dict[str, Any],
    ) -> dict[str, Any] | None:
        """Make a record and write it (and any before it) now, on this thread. Never raises
        for the disk: a record it does not take stays queued (see `error`)."""
        record = self.make(actor, action, target, params, result)
        self.flush()
        return record

    def tail(self, since: int = 0, limit: int = 200) -> list[dict[str, Any]]:
        """Records with seq > since, oldest first: the first `limit` of them, or the newest
        `limit` when since is 0. Read from the end back to `since` (records are in seq
        order), so a console following the log reads only what is new.

        Records still waiting for the disk (full, failing) are in the answer too, marked
        `on_disk: false`: an operator looking at the log during the outage sees what was
        done. They are copied before the file is read, so one written in between is
        answered once (from the disk) and none falls between the two."""
        with self._chain:
            waiting = {r["seq"]: {**r, "on_disk": False} for r, _ in self._pending}
        newest: list[dict[str, Any]] = []
        for record in _newest_first(self.path):
            if record["seq"] <= since or (not since and len(newest) == limit):
                break
            newest.append(record)
        on_disk = {r["seq"] for r in newest}
        merged = newest[::-1] + [
            r for seq, r in sorted(waiting.items()) if seq > since and seq not in on_disk
        ]
        return merged[-limit:] if not since else merged[:limit]

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, one last time; records the disk still refuses go to the
        agent's log in full (journald usually lives elsewhere), so they are not lost
        silently. A write hung in the kernel is not waited on for more than `timeout`
        (and its file is then left open, so the number cannot go to another file)."""
        got = self._disk.acquire(timeout=timeout)
        try:
            if got:
                self._flush_locked()
            with self._chain:
                left = [line for _, line in self._pending]
                dropped = len(self._dropped)
            for line in left:
                log.error("audit record not written (%s): %s", self.error, line.decode().rstrip())
            if dropped:
                log.error("%d audit records were dropped while the disk refused writes", dropped)
            if got and self._fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = -1
        finally:
            if got:
                self._disk.release()
