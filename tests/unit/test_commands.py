"""Configured commands: argv only, bounded output, and a timeout that kills the whole group."""

from __future__ import annotations

import asyncio
import os

import pytest

from agent import commands
from tests.support.wait import wait_for


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_exit_code_and_output_are_reported():
    result = await commands.run(["sh", "-c", "echo hello; exit 3"], timeout=5)
    assert result.exit_code == 3 and not result.ok
    assert result.output == "hello\n"


async def test_arguments_are_not_interpreted_by_a_shell(tmp_path):
    target = tmp_path / "x; touch pwned"
    result = await commands.run(["touch", str(target)], timeout=5)
    assert result.ok
    assert target.exists() and not (tmp_path / "pwned").exists()


async def test_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "grandchild"
    # The child starts a grandchild in the same group, then both hang.
    argv = ["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"]
    result = await commands.run(argv, timeout=0.5)
    assert result.timed_out and not result.ok
    assert "timed out" in result.summary()
    grandchild = int(pidfile.read_text())
    await asyncio.to_thread(wait_for, lambda: not _alive(grandchild), 5, "grandchild killed")


async def test_output_is_bounded():
    result = await commands.run(["sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' x"], timeout=10)
    assert result.ok
    assert len(result.output) == commands.OUTPUT_LIMIT


async def test_missing_program_is_an_error_not_an_exception():
    result = await commands.run(["/nonexistent/program"], timeout=5)
    assert not result.ok and result.error is not None
    assert "cannot start /nonexistent/program" in result.summary()


@pytest.mark.parametrize("ignore_term", [False, True])
async def test_cancelling_a_command_ends_it(tmp_path, ignore_term):
    pidfile = tmp_path / "pid"
    trap = "trap '' TERM; " if ignore_term else ""
    task = asyncio.create_task(
        commands.run(
            ["sh", "-c", f"{trap}echo $$ > {pidfile}; while :; do sleep 0.1; done"], timeout=60
        )
    )
    await asyncio.to_thread(
        wait_for, lambda: pidfile.exists() and pidfile.read_text().strip(), 5, "pid"
    )
    pid = int(pidfile.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _alive(pid)


async def test_a_deadline_during_the_grace_period_still_kills(tmp_path):
    # A probe's runner gives a command its timeout plus a short margin, less than the
    # SIGTERM grace: a command that ignores SIGTERM must still be killed when cut off.
    pidfile = tmp_path / "pid"
    argv = ["sh", "-c", f"trap '' TERM; echo $$ > {pidfile}; while :; do sleep 0.1; done"]
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5 + 0.25):
            await commands.run(argv, timeout=0.5)
    pid = int(pidfile.read_text())
    await asyncio.to_thread(wait_for, lambda: not _alive(pid), 5, f"pid {pid} to be gone")
