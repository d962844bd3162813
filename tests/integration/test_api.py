"""The API's security model and contracts, against a real agent process."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time

import httpx
import pytest

from tests.support.agent import http_probe, restartable
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def agent(start_agent, demo_service):
    a = start_agent(
        {
            "probes": {
                "web": http_probe(demo_service, interval="1s", timeout="500ms"),
                "disk": {
                    "kind": "disk",
                    "path": "/",
                    "min_free": "1MiB",
                    "interval": "1s",
                    "timeout": "500ms",
                },
            },
            "services": {"web": restartable(demo_service, ["web"])},
            "runbooks": {
                "hello": {
                    "description": "says hello",
                    "steps": [{"command": ["echo", "hello"], "timeout": "5s"}],
                }
            },
        }
    )
    wait_for(lambda: a.service("web")["state"] == "up", 10, "web up")
    return a


def test_mutations_need_the_token(agent):
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": agent.token}):
        r = httpx.post(agent.url + "/api/v1/services/web/restart", headers=headers, timeout=10)
        assert r.status_code == 401
        assert "bearer token" in r.json()["error"]
    assert not [r for r in agent.get("/api/v1/audit") if r["action"] == "restart"]


def test_token_file_is_private(agent):
    mode = (agent.state_dir / "token").stat().st_mode & 0o777
    assert mode == 0o640


def test_restart_is_audited_with_the_operator_and_reason(agent, demo_service):
    old_pid = demo_service.pid()
    r = agent.post("/api/v1/services/web/restart", actor="alice", json={"reason": "INC-42"})
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["ok"] and result["actor"] == "alice"
    assert result["steps"][0]["argv"] == demo_service.start_argv()
    assert demo_service.pid() != old_pid
    record = agent.get("/api/v1/audit")[-1]
    assert (record["actor"], record["action"], record["target"]) == ("alice", "restart", "web")
    assert record["params"] == {"reason": "INC-42"}
    assert record["result"]["ok"] is True
    assert record["seq"] == result["audit_seq"]
    event = agent.wait_event("action_restart")
    assert "alice" in event["message"]


def test_a_dry_run_answers_the_plan_and_runs_nothing(agent, demo_service):
    old_pid = demo_service.pid()
    audited = len(agent.get("/api/v1/audit"))
    dry = {"dry_run": True, "reason": "what would happen?"}
    plan = agent.post("/api/v1/services/web/restart", json=dry).json()
    assert (plan["kind"], plan["ok"], plan["status"]) == ("plan", True, 200), plan
    assert plan["steps"][0].startswith(shlex.join(demo_service.start_argv()))
    assert any("web is up" in w for w in plan["warnings"])
    book = agent.post("/api/v1/runbooks/hello/run", json=dry).json()
    assert book["steps"] == ["echo hello  (timeout 5s)"] and book["warnings"] == ["says hello"]
    missing = agent.post("/api/v1/services/nope/restart", json=dry)
    assert missing.status_code == 200, missing.text
    assert (missing.json()["ok"], missing.json()["status"]) == (False, 404)
    assert agent.post("/api/v1/probes/web/run", json=dry).json()["kind"] == "plan"
    # Nothing ran, nothing was audited; a dry run still needs the token like the real one.
    assert demo_service.pid() == old_pid
    assert len(agent.get("/api/v1/audit")) == audited
    r = httpx.post(agent.url + "/api/v1/services/web/restart", json=dry, timeout=10)
    assert r.status_code == 401


def test_an_agent_without_groups_has_no_group_routes_and_no_group_code(agent):
    r = httpx.get(agent.url + "/api/v1/groups", timeout=10)
    assert r.status_code == 404 and "error" in r.json()
    assert agent.get("/api/v1/status")["groups"] == []
    # What the daemon imports and builds for it, in a fresh interpreter: no HA groups code.
    code = (
        "import sys, agent.cli, agent.daemon\n"
        "from agent.api.app import build_api, core_routers\n"
        "build_api(None, core_routers(None))\n"
        "print(sorted(m for m in sys.modules if m.startswith('agent.failover')))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert run.stdout.strip() == "[]"


def test_runbook_and_probe_run_now(agent):
    r = agent.post("/api/v1/runbooks/hello/run")
    assert r.status_code == 200 and r.json()["steps"][0]["output"] == "hello\n"
    r = agent.post("/api/v1/probes/web/run")
    assert r.status_code == 200 and r.json()["probe"]["ok"] is True


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/api/v1/services/nope/restart", 404, "no service 'nope'"),
        ("/api/v1/runbooks/nope/run", 404, "no runbook 'nope'"),
        ("/api/v1/probes/nope/run", 404, "no probe 'nope'"),
        ("/api/v1/probes/..%2F..%2Fetc/run", 404, ""),
    ],
)
def test_unknown_targets_are_4xx_with_a_message(agent, path, status, error):
    r = agent.post(path)
    assert r.status_code == status
    assert error in r.json()["error"]


def test_refused_actions_are_audited_too(agent):
    agent.post("/api/v1/services/nope/restart", actor="bob")
    record = agent.get("/api/v1/audit")[-1]
    assert record["actor"] == "bob" and record["result"]["ok"] is False
    assert "no service" in record["result"]["refused"]


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        ("{not json", "application/json"),
        ('{"reason": 5}', "application/json"),
        ('{"reason": "x", "command": ["rm"]}', "application/json"),
        ("[]", "application/json"),
    ],
)
def test_malformed_bodies_are_422_never_500(agent, content, content_type):
    r = httpx.post(
        agent.url + "/api/v1/runbooks/hello/run",
        content=content,
        headers={"Authorization": f"Bearer {agent.token}", "Content-Type": content_type},
        timeout=10,
    )
    assert r.status_code == 422
    assert r.json()["error"].startswith("invalid request")


def test_bad_actor_header_is_refused(agent):
    r = agent.post("/api/v1/runbooks/hello/run", actor="evil; rm -rf /")
    assert r.status_code == 400


def test_public_listener_is_read_only(agent):
    assert httpx.get(agent.public_url + "/healthz", timeout=5).status_code == 200
    assert "hadeck_probe_state" in httpx.get(agent.public_url + "/metrics", timeout=5).text
    for method, path in [
        ("GET", "/api/v1/status"),
        ("GET", "/api/v1/audit"),
        ("POST", "/api/v1/services/web/restart"),
        ("GET", "/openapi.json"),
    ]:
        r = httpx.request(
            method,
            agent.public_url + path,
            timeout=5,
            headers={"Authorization": f"Bearer {agent.token}"},
        )
        assert r.status_code in (404, 405), (path, r.status_code)


def test_status_summarises_the_host(agent):
    status = agent.get("/api/v1/status")
    assert status["host"] == "test-host"
    assert status["summary"]["services_up"] == 1
    assert {p["name"] for p in status["probes"]} == {"web", "disk"}
    assert status["runbooks"][0]["steps"] == [["echo", "hello"]]
    wait_for(lambda: agent.get("/api/v1/status")["resources"]["sampled_at"], 10, "resources")
    res = agent.get("/api/v1/status")["resources"]
    assert 0 <= res["cpu_ratio"] <= 1 and res["memory_total_bytes"] > 0 and res["disks"]
    # The fleet poll asks for a slim answer: states and last results, no history.
    wait_for(lambda: all(p["recent"] for p in agent.get("/api/v1/status")["probes"]), 10, "runs")
    slim = agent.get("/api/v1/status", recent=0)
    assert all(p["recent"] == [] and p["last"] is not None for p in slim["probes"])
    assert all(len(p["recent"]) <= 2 for p in agent.get("/api/v1/status", recent=2)["probes"])


def test_events_since_cursor_returns_only_newer(agent):
    events = agent.get("/api/v1/events")
    last = events[-1]["id"]
    agent.post("/api/v1/runbooks/hello/run")
    newer = agent.get("/api/v1/events", since=last)
    assert newer and all(e["id"] > last for e in newer)
    assert [e["kind"] for e in newer] == ["action_runbook"]


def test_metrics_follow_prometheus_naming(agent):
    text = agent.text("/metrics")
    names = {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert names and all(n.startswith("hadeck_") for n in names), names
    assert 'hadeck_service_state{service="web",state="up"} 1.0' in text
    assert "hadeck_probe_duration_seconds_bucket" in text


def test_each_subsystem_exports_its_series_and_an_unconfigured_one_none(agent):
    """Supervision and host resources register their own series on the agent's registry;
    HA groups are not configured here, so not one `hadeck_group_*` series exists."""
    deadline = time.monotonic() + 10
    while "hadeck_host_memory_total_bytes " not in (text := agent.text("/metrics")):
        assert time.monotonic() < deadline, "no host sample exported within 10 s"
        time.sleep(0.1)
    assert 'hadeck_recovery_state{service="web",state="idle"} 1.0' in text
    assert "hadeck_host_disk_free_bytes{mount=" in text
    assert "hadeck_agent_config_reloads_total" in text
    assert "hadeck_group_" not in text
