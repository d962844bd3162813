"""`hadeck-agent restart|operations|...` act through the local agent's API, as patronictl does."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.agent import AgentProcess, restartable
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def ctl(agent: AgentProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args, "--config", str(agent.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "SUDO_USER"},
    )


def test_restart_through_the_agent_is_audited_with_the_operator(start_agent, demo_service):
    agent = start_agent(
        {
            "probes": {
                "web": {
                    "kind": "http",
                    "url": demo_service.url,
                    "interval": "1s",
                    "timeout": "500ms",
                }
            },
            "services": {"web": restartable(demo_service, ["web"])},
        }
    )
    done = ctl(agent, "restart", "web", "--reason", "from the cli", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["kind"] == "action" and result["ok"] and result["action"] == "restart"
    record = agent.get("/api/v1/audit", limit=5)[-1]
    assert record["action"] == "restart" and record["params"]["reason"] == "from the cli"
    before = len(agent.get("/api/v1/audit", limit=50))
    plan = ctl(agent, "restart", "web", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.startswith("restart web: would run:\n  ")
    refused = ctl(agent, "restart", "nosuch", "--dry-run")
    assert (
        refused.returncode == 2 and "would be refused (404): no service 'nosuch'" in refused.stdout
    )
    assert len(agent.get("/api/v1/audit", limit=50)) == before  # a dry run is not audited
    assert record["actor"] == pwd.getpwuid(os.getuid()).pw_name  # the login, not "api"


def test_refusals_and_an_absent_agent_have_their_exit_codes(start_agent, demo_service):
    agent = start_agent({"probes": {}, "services": {}})
    refused = ctl(agent, "restart", "nosuch")
    assert refused.returncode == 2
    assert "the agent refused: no service 'nosuch'" in refused.stderr
    listed = ctl(agent, "operations", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    unknown = ctl(agent, "operation", "op-0123456789ab")
    assert unknown.returncode == 2 and "no operation" in unknown.stderr
    assert agent.stop() == 0
    gone = ctl(agent, "restart", "web")
    assert gone.returncode == 1 and "cannot reach the agent" in gone.stderr
    assert "Traceback" not in gone.stderr + refused.stderr + unknown.stderr


def test_a_token_the_operator_cannot_read_says_which_group_is_needed(start_agent):
    agent = start_agent({})
    wait_for(lambda: (agent.state_dir / "token").exists(), 10, "the token file")
    # The config readable by anyone (as in /etc/hadeck); the token, 0640 root, is not.
    shared = Path(tempfile.mkdtemp())
    shared.chmod(0o755)
    readable = shared / "agent.yaml"
    readable.write_text(agent.config_path.read_text())
    readable.chmod(0o644)
    nobody = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            sys.executable,
            "-m",
            "agent.cli",
            "restart",
            "web",
            "--config",
            str(readable),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        # Under `tests/run --coverage`, nobody could not write the coverage data file.
        env={k: v for k, v in os.environ.items() if not k.startswith("COVERAGE")},
    )
    shutil.rmtree(shared)
    assert nobody.returncode == 2, nobody.stderr
    assert "hadeck" in nobody.stderr and "Traceback" not in nobody.stderr
