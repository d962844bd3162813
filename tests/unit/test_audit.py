"""The audit log is hash-chained: any edit, deletion, reordering or truncation is found."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.audit import AuditLog, _newest_first, read, verify

ROOT = Path(__file__).resolve().parents[2]


def write_log(path: Path, n: int = 5) -> None:
    log = AuditLog(path)
    for i in range(n):
        log.append("alice", "restart", f"svc{i}", {"reason": "test"}, {"ok": True})
    log.close()


def cli_verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "audit", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )


def test_intact_log_verifies(tmp_path):
    log = tmp_path / "audit.jsonl"
    write_log(log)
    proc = cli_verify(log)
    assert proc.returncode == 0
    assert "5 records, chain intact" in proc.stdout


def test_chain_continues_across_reopen(tmp_path):
    log = tmp_path / "audit.jsonl"
    write_log(log, 2)
    write_log(log, 2)
    assert verify(log) == (4, None)


def _edit(lines: list[str], i: int, **changes: object) -> None:
    record = json.loads(lines[i])
    record.update(changes)
    lines[i] = json.dumps(record, sort_keys=True) + "\n"


@pytest.mark.parametrize(
    ("tamper", "line", "reason"),
    [
        (lambda ls: _edit(ls, 2, actor="mallory"), 3, "hash does not match"),
        (lambda ls: ls.pop(1), 2, "prev does not match"),
        (lambda ls: ls.insert(1, ls.pop(3)), 2, "prev does not match"),
        (lambda ls: ls.__setitem__(4, ls[4][:30]), 5, "truncated record"),
        (lambda ls: ls.__setitem__(0, "garbage\n"), 1, "not a JSON object"),
    ],
    ids=["edited", "deleted", "reordered", "truncated", "garbage"],
)
def test_tampering_is_detected_and_the_first_broken_record_named(tmp_path, tamper, line, reason):
    log = tmp_path / "audit.jsonl"
    write_log(log)
    lines = log.read_text().splitlines(keepends=True)
    tamper(lines)
    log.write_text("".join(lines))
    proc = cli_verify(log)
    assert proc.returncode == 1
    assert f"line {line}: {reason}" in proc.stdout


def test_a_record_rehashed_after_an_edit_still_breaks_the_chain(tmp_path):
    """Recomputing the edited record's own hash does not help: the next record's prev differs."""
    from agent.audit import _digest

    log = tmp_path / "audit.jsonl"
    write_log(log)
    lines = log.read_text().splitlines(keepends=True)
    record = json.loads(lines[1])
    record["actor"] = "mallory"
    record["hash"] = _digest(record)
    lines[1] = json.dumps(record) + "\n"
    log.write_text("".join(lines))
    count, broken = verify(log)
    assert count == 2 and broken is not None and broken.line == 3


def test_log_file_is_not_world_readable(tmp_path):
    log = tmp_path / "audit.jsonl"
    write_log(log, 1)
    assert log.stat().st_mode & 0o007 == 0


def test_a_record_cut_by_a_crash_stays_visible_and_new_records_stay_whole(tmp_path):
    log = tmp_path / "audit.jsonl"
    write_log(log, 2)
    with log.open("a") as fh:
        fh.write('{"seq": 3, "actor": "ali')  # the agent died mid-write
    write_log(log, 1)
    lines = log.read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[3])["target"] == "svc0"
    count, broken = verify(log)
    assert count == 2 and broken is not None and broken.line == 3


def test_tail_reads_back_from_the_end_as_a_full_read_would(tmp_path):
    path = tmp_path / "audit.jsonl"
    write_log(path, 300)  # about 100 KB: more than one block of the reverse reader
    with path.open("a") as fh:
        fh.write('{"seq": 301, "cut sh')  # a crash mid-record: never returned
    every = [r for _, r, _ in read(path) if r is not None]
    assert [r["seq"] for r in every] == list(range(1, 301))

    log = AuditLog(path)  # reopened after the crash: the chain goes on from record 300
    assert log.append("bob", "restart", "svc", {}, {"ok": True})["seq"] == 301
    every.append(next(r for r in _newest_first(path)))
    for since, limit in [(0, 200), (0, 1), (0, 1000), (250, 10), (250, 200), (299, 5), (301, 5)]:
        expected = [r for r in every if r["seq"] > since]
        expected = expected[:limit] if since else expected[-limit:]
        assert log.tail(since, limit) == expected, (since, limit)
    log.close()

    # Block edges anywhere in a record: the same records, newest first.
    for block in (7, 64, 333, 4096):
        assert list(_newest_first(path, block)) == every[::-1]
