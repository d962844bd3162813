"""One command's stdout into another's stdin (a database dump into `restic backup --stdin`).

Real processes, each side in its own process group, an OS pipe between them: what moves,
what each side reports, and that a deadline or a cancellation ends both groups.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from agent import commands
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pids(*files: Path) -> list[int]:
    """The pids each side wrote (itself and its grandchild), once all have written them."""
    wait_for(lambda: all(f.exists() for f in files), 10, "both sides to start")
    return [int(pid) for f in files for pid in f.read_text().split()]


def _hanging(tmp_path: Path, side: str, ignore_term: bool) -> list[str]:
    """A side that starts a grandchild in its group, writes both pids, then hangs."""
    trap = "trap '' TERM; " if ignore_term else ""
    pids = tmp_path / side
    return ["sh", "-c", f"{trap}sleep 300 & echo $$ $! > {pids}.tmp; mv {pids}.tmp {pids}; wait"]


async def test_data_moves_and_both_sides_report():
    producer = ["sh", "-c", "head -c 3000000 /dev/zero; echo dumped >&2"]
    result = await commands.run_piped(producer, ["wc", "-c"], timeout=20)
    assert result.ok, result.summary()
    assert result.producer.exit_code == 0 and result.consumer.exit_code == 0
    assert result.producer.stderr == "dumped\n" and result.producer.stdout == ""
    assert result.stdout.strip() == "3000000"


async def test_a_failing_producer_fails_the_pipeline():
    producer = ["sh", "-c", "echo partial; echo 'dump failed' >&2; exit 3"]
    result = await commands.run_piped(producer, ["wc", "-c"], timeout=20)
    assert not result.ok
    assert result.producer.exit_code == 3 and result.producer.stderr == "dump failed\n"
    assert result.consumer.exit_code == 0 and result.stdout.strip() == "8"
    assert "exit 3" in result.summary()


async def test_a_failing_consumer_fails_the_pipeline_and_does_not_hang_the_producer():
    consumer = ["sh", "-c", "head -c 10 >/dev/null; echo 'repository locked' >&2; exit 4"]
    result = await commands.run_piped(["yes"], consumer, timeout=20)
    assert not result.ok and not result.timed_out
    assert result.consumer.exit_code == 4 and result.consumer.stderr == "repository locked\n"
    assert result.producer.exit_code == -signal.SIGPIPE


async def test_stdin_feeds_the_producer_and_lines_stream_from_the_consumer():
    lines: list[str] = []
    result = await commands.run_piped(
        ["tr", "a-z", "A-Z"],
        ["cat"],
        timeout=20,
        stdin=b"one\ntwo\n",
        on_stdout=lines.append,
    )
    assert result.ok and lines == ["ONE", "TWO"]


@pytest.mark.parametrize("ignore_term", [False, True])
async def test_a_timeout_kills_both_process_groups(tmp_path, ignore_term):
    producer = _hanging(tmp_path, "producer", ignore_term)
    consumer = _hanging(tmp_path, "consumer", ignore_term)
    result = await commands.run_piped(producer, consumer, timeout=1)
    assert result.timed_out and not result.ok
    assert result.producer.timed_out and result.consumer.timed_out
    pids = _pids(tmp_path / "producer", tmp_path / "consumer")
    assert len(pids) == 4
    await asyncio.to_thread(
        wait_for, lambda: not [p for p in pids if _alive(p)], 10, "every process gone"
    )


@pytest.mark.parametrize("ignore_term", [False, True])
async def test_cancelling_kills_both_process_groups(tmp_path, ignore_term):
    producer = _hanging(tmp_path, "producer", ignore_term)
    consumer = _hanging(tmp_path, "consumer", ignore_term)
    task = asyncio.create_task(commands.run_piped(producer, consumer, timeout=60))
    pids = await asyncio.to_thread(_pids, tmp_path / "producer", tmp_path / "consumer")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(
        wait_for, lambda: not [p for p in pids if _alive(p)], 10, "every process gone"
    )


async def test_end_all_ends_a_running_pipeline(tmp_path):
    producer = _hanging(tmp_path, "producer", True)
    consumer = _hanging(tmp_path, "consumer", True)
    task = asyncio.create_task(commands.run_piped(producer, consumer, timeout=60))
    pids = await asyncio.to_thread(_pids, tmp_path / "producer", tmp_path / "consumer")
    await commands.end_all()
    result = await task
    assert not result.ok
    await asyncio.to_thread(
        wait_for, lambda: not [p for p in pids if _alive(p)], 10, "every process gone"
    )


async def test_a_consumer_that_cannot_start_starts_no_producer(tmp_path):
    marker = tmp_path / "dumped"
    result = await commands.run_piped(["touch", str(marker)], ["/nonexistent/restic"], timeout=5)
    assert not result.ok
    assert "cannot start /nonexistent/restic" in result.consumer.summary()
    assert result.producer.error is not None and not marker.exists()


async def test_a_producer_that_cannot_start_ends_the_consumer():
    # The consumer must not read an empty stream as a complete one (an empty snapshot).
    consumer = ["sh", "-c", "cat; echo finished"]
    result = await commands.run_piped(["/nonexistent/pg_dump"], consumer, timeout=20)
    assert not result.ok
    assert "cannot start /nonexistent/pg_dump" in result.producer.summary()
    assert "finished" not in result.stdout and result.consumer.exit_code != 0
