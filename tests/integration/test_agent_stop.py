"""Stopping an agent whose probes are in flight: a clean stop, and a clean log."""

from __future__ import annotations

import pytest

from tests.support.agent import AgentProcess
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def test_a_stop_with_probe_runs_in_flight_logs_no_traceback(start_agent) -> None:
    # Found from outside: each command probe run cut short at stop was logged by the
    # scheduler as "Job ... raised an exception" with a CancelledError traceback, which
    # reads as a crash in journald at exactly the moment an operator looks.
    # A run lasts its whole interval: whenever the stop comes, one is in flight.
    slow = {"kind": "command", "command": ["sleep", "5"], "interval": "1s", "timeout": "1s"}
    agent: AgentProcess = start_agent({"probes": {"slow": slow, "slow2": {**slow}}})
    wait_for(lambda: agent.probe_runs("slow", "failure") >= 2, 10, "runs of the slow probe")
    assert agent.stop(timeout=10) == 0
    log = agent.log()
    assert "agent_stopped" in log
    assert "Traceback" not in log and "raised an exception" not in log, log[-3000:]
