"""The fencing process on its own (agent/failover/fencer.py), driven through its pipe the
way the agent drives it, with real fence commands and the stand-in watchdog device."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.clock import now
from tests.support.wait import wait_for
from tests.support.watchdog import StandInWatchdog


class Fencer:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.failover.fencer", json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def send(self, *messages: dict[str, Any]) -> None:
        """Several messages in one write: as a backlog arrives after a stop."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in messages))
        self.proc.stdin.flush()

    def answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        return dict(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def fencer(tmp_path: Path) -> Iterator[Any]:
    started: list[Fencer] = []

    def start(fence: list[str], timeout: float = 1.0, **extra: Any) -> Fencer:
        cfg = {"fence": {"argv": fence, "timeout": timeout}, "env": {}, **extra}
        f = Fencer(cfg)
        started.append(f)
        return f

    yield start
    for f in started:
        f.close()


def marker(path: Path) -> list[str]:
    return ["sh", "-c", f"date +%s.%N >> {path}"]


def test_the_deadline_is_judged_on_the_newest_hold_of_a_backlog(
    fencer: Any, tmp_path: Path
) -> None:
    fenced = tmp_path / "fenced"
    f = fencer(marker(fenced))
    t = now()
    # A stale hold (its deadline passed) followed by a fresh one, read in one go.
    stale = {"op": "hold", "deadline": t - 1, "expiry": t}
    f.send(stale, {"op": "hold", "deadline": t + 1.0, "expiry": t + 2})
    outcome = f.answer()["fenced"]  # at the fresh deadline, when no renewal came
    assert outcome["ok"] and 0 <= outcome["late"] < 0.5 and now() >= t + 1.0
    assert len(fenced.read_text().split()) == 1


def test_a_hold_after_the_fence_does_not_undo_it(fencer: Any, tmp_path: Path) -> None:
    fenced = tmp_path / "fenced"
    f = fencer(marker(fenced))
    t = now()
    f.send({"op": "hold", "deadline": t + 0.2, "expiry": t + 1})
    assert f.answer()["fenced"]["ok"]
    # A renewal that came back late: the fencer does not hold (nor fence) again on it...
    t = now()
    f.send({"op": "hold", "deadline": t + 0.2, "expiry": t + 1})
    time.sleep(0.6)  # three times past that hold's deadline: no second fence
    assert len(fenced.read_text().split()) == 1
    # ...but a new acquisition (acknowledged) is held and fenced as usual.
    t = now()
    f.send({"op": "hold", "deadline": t + 0.2, "expiry": t + 1, "ack": True})
    assert f.answer()["armed"]
    assert f.answer()["fenced"]["ok"]
    assert len(fenced.read_text().split()) == 2


def test_a_fence_whose_child_keeps_stderr_open_ends_with_its_own_exit(
    fencer: Any, tmp_path: Path
) -> None:
    f = fencer(["sh", "-c", "sleep 30 & echo done >&2; exit 0"], timeout=2.0)
    t = now()
    f.send({"op": "hold", "deadline": t, "expiry": t + 1})
    outcome = f.answer()["fenced"]
    assert outcome["ok"] and outcome["duration"] < 1.0 and "done" in outcome["stderr"]


def test_a_hung_fence_is_killed_at_its_timeout(fencer: Any) -> None:
    f = fencer(["sleep", "30"], timeout=0.5)
    t = now()
    f.send({"op": "hold", "deadline": t, "expiry": t + 1})
    outcome = f.answer()["fenced"]
    assert not outcome["ok"] and outcome["timed_out"]


def test_the_watchdog_is_not_armed_when_its_first_kick_could_outlast_the_lease(
    fencer: Any, tmp_path: Path
) -> None:
    device = tmp_path / "watchdog"
    with StandInWatchdog(device) as dog:
        f = fencer(["true"], watchdog={"device": str(device), "timeout": 2})
        t = now()
        # The lease ends in 1.5 s: a 2 s watchdog armed now could fire after it.
        f.send({"op": "hold", "deadline": t + 1.0, "expiry": t + 1.5, "ack": True})
        answer = f.answer()
        assert not answer["armed"] and "too late" in answer["error"]
        assert not dog.changes
        # With room, it arms, then disarms when the member steps down.
        t = now()
        f.send({"op": "hold", "deadline": t + 5, "expiry": t + 6, "ack": True})
        assert f.answer()["armed"]
        wait_for(lambda: dog.armed, 5, "the device armed")
        f.send({"op": "down"})
        wait_for(lambda: dog.changes[-1][1] == "disarmed", 5, "the device disarmed")
        assert not dog.fired


def test_the_agents_pipe_closing_leaves_the_fence_to_the_deadline_then_it_ends(
    fencer: Any, tmp_path: Path
) -> None:
    fenced, reports = tmp_path / "fenced", tmp_path / "fenced-pg.jsonl"
    f = fencer(marker(fenced), reports=str(reports))
    t = now()
    f.send({"op": "hold", "deadline": t + 0.5, "expiry": t + 1})
    assert f.proc.stdin is not None
    f.proc.stdin.close()  # the agent died
    assert f.proc.wait(5) == 0
    assert float(fenced.read_text().split()[0]) >= time.time() - (now() - (t + 0.5)) - 0.1
    (line,) = reports.read_text().splitlines()
    assert json.loads(line)["fenced"]["agent_gone"]
