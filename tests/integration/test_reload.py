"""SIGHUP reloads are transactional: a new config is applied whole or not at all.

Each test starts a real agent supervising a real service, then reloads with a
config the agent cannot apply, and checks that the old one keeps running (its
probes still run, the API lists them, the service state moves) and that the
rejection is said: an event naming the file and the problem, the reload
metric, a log line, and no traceback or stray task error in the log.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.support.agent import AgentProcess, DemoService, http_probe
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def _reloads(agent: AgentProcess, result: str) -> float:
    for line in agent.text("/metrics").splitlines():
        if line.startswith("hadeck_agent_config_reloads_total{") and f'result="{result}"' in line:
            return float(line.split()[-1])
    return 0.0


def _still_running_the_old_config(agent: AgentProcess, demo_service: DemoService) -> None:
    """The old probe still runs, and a failure still moves the service down."""
    runs = agent.probe_runs("web", "success")
    wait_for(lambda: agent.probe_runs("web", "success") > runs + 2, 10, "more runs of web")
    assert {p["name"] for p in agent.get("/api/v1/probes")} == {"web"}
    demo_service.kill()
    agent.wait_event("service_down", service="web")


def _rejected(agent: AgentProcess, before: int) -> dict[str, object]:
    def new_rejection() -> dict[str, object] | None:
        found = agent.events("config_reload_rejected")
        return found[-1] if len(found) > before else None

    return wait_for(new_rejection, 15, "config_reload_rejected")


@pytest.fixture
def watched(start_agent, demo_service) -> AgentProcess:
    agent = start_agent(
        {
            "probes": {"web": http_probe(demo_service)},
            "services": {"web": {"probes": ["web"]}},
        }
    )
    wait_for(lambda: agent.service("web")["state"] == "up", 10, "web up")
    return agent


def test_a_probe_that_cannot_be_scheduled_keeps_the_old_config(watched, demo_service):
    agent = watched
    agent.config["probes"]["later"] = {
        "kind": "tcp",
        "host": "127.0.0.1",
        "port": demo_service.port,
        "interval": 1e15,
        "timeout": "1s",
    }
    agent.write_config()
    agent.signal(signal.SIGHUP)
    event = _rejected(agent, 0)
    assert str(agent.config_path) in str(event["message"]) + str(event["evidence"])
    assert any("later" in p for p in event["evidence"]["problems"])  # type: ignore[index]
    assert _reloads(agent, "rejected") == 1
    assert _reloads(agent, "applied") == 0
    _still_running_the_old_config(agent, demo_service)
    log = agent.log()
    assert "Traceback" not in log and "never retrieved" not in log


def _nested(depth: int) -> str:
    return (
        "probes:\n"
        + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(depth))
        + "  " * (depth + 1)
        + "x: 1\n"
    )


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("? [a, b]\n: 1\n", id="unhashable-key"),
        pytest.param(_nested(500), id="nested-500"),
        pytest.param("[" * 3000 + "]" * 3000 + "\n", id="flow-nested-3000"),
        pytest.param("agent: {name: \udcff}\n", id="lone-surrogate-file"),
    ],
)
def test_a_config_the_parser_chokes_on_is_rejected_cleanly(watched, demo_service, text):
    agent = watched
    path: Path = agent.config_path
    path.write_text(text, errors="surrogateescape")
    agent.signal(signal.SIGHUP)
    event = _rejected(agent, 0)
    assert str(path) in str(event["message"]) + str(event["evidence"])
    assert _reloads(agent, "rejected") == 1
    _still_running_the_old_config(agent, demo_service)
    log = agent.log()
    assert "Traceback" not in log and "never retrieved" not in log
    assert f"reload of {path} rejected" in log


def test_groups_added_by_a_reload_wait_for_a_restart_and_say_so(watched, demo_service, tmp_path):
    """HA groups are an optional subsystem: one not running is not started by a reload (a
    lease must be taken at a start, with the fencing that goes with it), and the event says
    so instead of leaving the operator to believe the group runs."""
    agent = watched
    agent.config["groups"] = {
        "g": {
            "service": "web",
            "hooks": {
                "promote": {"command": ["true"], "timeout": "1s"},
                "demote": {"command": ["true"], "timeout": "1s"},
            },
        }
    }
    agent.config["lease_store"] = {"kind": "sqlite", "path": str(tmp_path / "leases.db")}
    agent.write_config()
    agent.signal(signal.SIGHUP)
    event = agent.wait_event("config_reloaded")
    assert event["evidence"]["needs_restart"] == ["groups", "lease_store"]
    assert "groups, lease_store changes take effect after a restart" in event["message"]
    assert agent.get("/api/v1/status")["groups"] == []
    assert httpx.get(agent.url + "/api/v1/groups", timeout=10).status_code == 404
    _still_running_the_old_config(agent, demo_service)
