"""Configured commands: argv only, bounded output, and a timeout that kills the whole group."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import pytest

from agent import commands
from agent.config import AgentConfig
from agent.probes.command import CommandCheck
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
    assert result.ok and result.stdout_truncated
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


def _json_doc(size: int) -> str:
    """A program printing one JSON document of about `size` bytes (one line, as restic's)."""
    return (
        "import json, sys; "
        f"json.dump({{'chunks': ['%06d' % i + 'x' * 1017 for i in range({size} // 1024)]}}, "
        "sys.stdout)"
    )


async def test_stdout_and_stderr_are_kept_apart():
    result = await commands.run(["sh", "-c", "echo out; echo err >&2; echo more"], timeout=5)
    assert result.ok
    assert result.stdout == "out\nmore\n" and result.stderr == "err\n"
    # What an operator reads (the API's step output): stdout, then stderr.
    assert result.output == "out\nmore\nerr\n"


async def test_a_json_document_within_the_limit_arrives_whole():
    argv = [sys.executable, "-c", _json_doc(1024 * 1024)]
    result = await commands.run(argv, timeout=20, limit=2 * 1024 * 1024)
    assert result.ok and not result.stdout_truncated
    chunks = json.loads(result.stdout)["chunks"]
    assert len(chunks) == 1024 and chunks[-1].startswith("001023")


async def test_output_over_the_limit_says_truncated_and_keeps_the_tail():
    argv = [sys.executable, "-c", _json_doc(1024 * 1024)]
    result = await commands.run(argv, timeout=20, limit=64 * 1024)
    assert result.ok and result.stdout_truncated and not result.stderr_truncated
    assert len(result.stdout) == 64 * 1024 and result.stdout.endswith("x" * 1017 + '"]}')
    small = await commands.run(["echo", "fits"], timeout=5, limit=5)
    assert small.stdout == "fits\n" and not small.stdout_truncated


async def test_stderr_is_bounded_and_says_so():
    argv = ["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' e >&2; echo last >&2"]
    result = await commands.run(argv, timeout=10, limit=1000)
    assert result.stderr_truncated and not result.stdout_truncated
    assert len(result.stderr) == 1000 and result.stderr.endswith("eeelast\n")


async def test_lines_reach_the_callbacks_while_the_command_runs(tmp_path):
    go = tmp_path / "go"
    out: list[str] = []
    err: list[str] = []
    script = (
        "echo first; echo warn >&2; "
        f"while [ ! -e {go} ]; do sleep 0.02; done; "
        "echo second; printf 'no newline at the end'"
    )
    task = asyncio.create_task(
        commands.run(["sh", "-c", script], timeout=30, on_stdout=out.append, on_stderr=err.append)
    )
    await asyncio.to_thread(wait_for, lambda: out == ["first"] and err == ["warn"], 10, "lines")
    # The command is still waiting for the file: the lines came while it ran.
    assert not task.done()
    go.touch()
    result = await task
    assert result.ok
    assert out == ["first", "second", "no newline at the end"] and err == ["warn"]
    assert result.stdout == "first\nsecond\nno newline at the end"


async def test_a_long_line_without_newline_is_cut_at_the_limit():
    lines: list[str] = []
    argv = ["sh", "-c", "head -c 10000000 /dev/zero | tr '\\0' x; echo; echo next"]
    result = await commands.run(argv, timeout=20, limit=64 * 1024, on_stdout=lines.append)
    assert result.ok and result.stdout_truncated
    assert [len(line) for line in lines] == [64 * 1024, 4]
    assert lines[1] == "next"


async def test_a_callback_that_raises_ends_the_command_and_raises(tmp_path):
    pidfile = tmp_path / "pid"

    def fail(line: str) -> None:
        raise ValueError(f"cannot parse {line!r}")

    argv = ["sh", "-c", f"echo $$ > {pidfile}; echo garbage; while :; do sleep 0.1; done"]
    with pytest.raises(ValueError, match="cannot parse 'garbage'"):
        await commands.run(argv, timeout=30, on_stdout=fail)
    pid = int(pidfile.read_text())
    await asyncio.to_thread(wait_for, lambda: not _alive(pid), 5, f"pid {pid} to be gone")


async def test_stdin_from_data_or_file(tmp_path):
    from_data = await commands.run(["wc", "-c"], timeout=5, stdin=b"x" * 300000)
    assert from_data.ok and from_data.stdout.strip() == "300000"
    source = tmp_path / "input"
    source.write_bytes(b"line\n" * 7)
    from_file = await commands.run(["wc", "-l"], timeout=5, stdin=source)
    assert from_file.ok and from_file.stdout.strip() == "7"
    missing = await commands.run(["wc", "-l"], timeout=5, stdin=tmp_path / "absent")
    assert not missing.ok and "cannot open" in missing.summary() and "absent" in missing.summary()


async def test_stdin_data_the_command_does_not_read_is_no_error():
    result = await commands.run(["true"], timeout=5, stdin=b"x" * 1000000)
    assert result.ok


async def test_command_probe_matches_stdout_only():
    def probe(command: list[str]) -> CommandCheck:
        spec = {"kind": "command", "interval": "5s", "timeout": "2s", "stdout_regex": "ok$"}
        cfg = AgentConfig.model_validate({"probes": {"p": {**spec, "command": command}}})
        return CommandCheck(cfg.probes["p"])  # type: ignore[arg-type]

    assert (await probe(["sh", "-c", "echo ok; echo noise >&2"]).check()).ok
    on_stderr = await probe(["sh", "-c", "echo lagging; echo ok >&2"]).check()
    assert not on_stderr.ok and on_stderr.detail == "stdout does not match 'ok$': lagging"


async def test_end_all_ends_running_commands(tmp_path):
    pidfile = tmp_path / "pid"
    argv = ["sh", "-c", f"trap '' TERM; echo $$ > {pidfile}; while :; do sleep 0.1; done"]
    task = asyncio.create_task(commands.run(argv, timeout=60))
    await asyncio.to_thread(
        wait_for, lambda: pidfile.exists() and pidfile.read_text().strip(), 5, "pid"
    )
    await commands.end_all()
    result = await task
    assert not result.ok and result.exit_code == -signal.SIGKILL
    assert not _alive(int(pidfile.read_text()))
