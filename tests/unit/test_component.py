"""The one helper that starts and stops real processes for the demo, the tests and the
benchmarks: readiness with a deadline, the log's tail on failure, terminate-then-kill of
the whole process group."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from console.demo.component import (
    Component,
    ComponentError,
    free_port,
    log_line,
    port_open,
    start_all,
    stop_all,
    wait_for,
)


def sh(tmp_path: Path, script: str, ready: str = "ready", **kw: object) -> Component:
    return Component(
        "sh",
        ["sh", "-c", script],
        tmp_path / "sh.log",
        log_line(ready),
        **kw,  # type: ignore[arg-type]
    )


def state(pid: int) -> str:
    """The process's state letter in /proc (R, S, T stopped, Z zombie), "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return ""


def alive(pid: int) -> bool:
    return state(pid) not in ("", "Z")


def test_start_returns_once_the_log_says_ready_and_stop_is_a_clean_sigterm(tmp_path: Path) -> None:
    c = sh(tmp_path, "sleep 0.3; echo ready; exec sleep 60")
    started = time.monotonic()
    c.start()
    assert time.monotonic() - started >= 0.3
    assert c.running and "ready" in c.log()
    assert c.stop() == -signal.SIGTERM
    assert not c.running


def test_a_process_that_exits_before_it_is_ready_fails_the_start_with_its_log(
    tmp_path: Path,
) -> None:
    c = sh(tmp_path, "echo cannot bind port 80 >&2; exit 3")
    with pytest.raises(ComponentError) as err:
        c.start()
    message = str(err.value)
    assert "exited with 3 before it was ready" in message
    assert "cannot bind port 80" in message and str(c.log_path) in message


def test_not_ready_by_the_deadline_is_an_error_and_the_process_is_gone(tmp_path: Path) -> None:
    c = Component(
        "silent",
        ["sleep", "60"],
        tmp_path / "silent.log",
        port_open(free_port()),
        start_timeout=0.5,
    )
    with pytest.raises(ComponentError, match=r"not ready within 0.5s .*accept connections"):
        c.start()
    assert not c.running


def test_a_process_that_ignores_sigterm_is_killed_with_what_it_started(tmp_path: Path) -> None:
    # The child stays in the group (a shell's background job); it ignores SIGTERM too.
    c = sh(
        tmp_path,
        "trap '' TERM; sleep 60 & echo child $!; echo ready; while :; do sleep 0.1; done",
        stop_timeout=0.5,
    )
    c.start()
    child = int(next(line for line in c.log().splitlines() if line.startswith("child")).split()[1])
    with pytest.raises(ComponentError, match=r"did not stop within 0\.5s of SIGTERM; killed it"):
        c.stop()
    assert not c.running
    wait_for(lambda: not alive(child), 5, "the child to be killed with its parent")


def test_what_a_stopped_process_leaves_in_its_group_is_killed(tmp_path: Path) -> None:
    c = sh(tmp_path, "trap 'exit 0' TERM; sleep 60 & echo child $!; echo ready; wait")
    c.start()
    child = int(next(line for line in c.log().splitlines() if line.startswith("child")).split()[1])
    assert c.stop() == 0
    wait_for(lambda: not alive(child), 5, "the orphan to be killed")


def test_a_frozen_process_is_thawed_to_be_stopped(tmp_path: Path) -> None:
    # One child, forked before "ready": dash forks each command with vfork, and a SIGSTOP
    # that lands between a vfork and its exec stops the child while the shell waits for it
    # in the kernel, never stopped itself (a CI flake of a `while :; do sleep 0.1; done`).
    c = sh(tmp_path, "trap 'echo got TERM; exit 0' TERM; sleep 1000 & echo ready; wait")
    c.start()
    c.freeze()
    wait_for(lambda: state(c.pid) == "T", 5, "the process to be stopped")
    assert c.stop(5) == 0
    assert "got TERM" in c.log()


def test_a_restart_waits_for_its_own_readiness_not_the_previous_runs_log(tmp_path: Path) -> None:
    marker = tmp_path / "second"
    c = sh(
        tmp_path,
        f"if [ -e {marker} ]; then sleep 0.5; fi; touch {marker}; echo ready; exec sleep 60",
    )
    c.start()
    c.kill()
    started = time.monotonic()
    c.start()
    assert time.monotonic() - started >= 0.5
    assert c.log().count("ready") == 2 and c.log_tail().count("ready") == 1
    c.stop()


def test_start_all_and_stop_all_run_side_by_side(tmp_path: Path) -> None:
    slow = [
        Component(
            f"sh{i}",
            [
                "sh",
                "-c",
                "trap 'sleep 0.5; exit 0' TERM; sleep 0.5; echo ready; while :; do sleep 0.1; done",
            ],
            tmp_path / f"sh{i}.log",
            log_line("ready"),
        )
        for i in range(3)
    ]
    started = time.monotonic()
    start_all(slow)
    assert time.monotonic() - started < 1.4  # not 3 x 0.5 s
    started = time.monotonic()
    assert stop_all(slow) == []
    assert time.monotonic() - started < 1.4
    assert not any(c.running for c in slow)


def test_wait_for_asks_once_more_at_the_deadline_then_says_what_it_waited_for() -> None:
    calls = []
    assert wait_for(lambda: calls.append(1) or len(calls) >= 1, 0, "first call") is True
    with pytest.raises(ComponentError, match=r"timed out after 0.1s waiting for nothing \(last: 0"):
        wait_for(lambda: 0, 0.1, "nothing")
