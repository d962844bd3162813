"""The API fuzzed from its own OpenAPI spec against a real agent process: never a 5xx."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from agent.api.app import build_api
from tests.support.agent import AgentProcess, DemoService, http_probe, restartable
from tests.support.groups import member_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fuzzed_agent(tmp_path_factory):
    d: Path = tmp_path_factory.mktemp("fuzz")
    svc = DemoService(d)
    svc.start()
    # A member of an HA group too, so the group routes are there to be fuzzed.
    store = {"kind": "sqlite", "path": str(d / "leases.db"), "timeout": "1s"}
    cfg = member_config("m1", d, svc, store)
    cfg["probes"]["web"] = http_probe(svc, interval="1s", timeout="500ms")
    cfg["services"]["web"] = restartable(svc, ["web"])
    cfg["runbooks"] = {"noop": {"steps": [{"command": ["true"], "timeout": "5s"}]}}
    agent = AgentProcess(d, cfg)
    agent.start()
    yield agent
    agent.stop()
    svc.stop()


# The spec is the one the agent serves (built by the same code, without a running agent), so
# the tests can be generated at collection time; the calls go to the real agent process.
schema = schemathesis.openapi.from_dict(build_api(None).openapi())  # type: ignore[arg-type]


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_answers_match_the_spec(case, fuzzed_agent):
    """Every generated request, valid or not, gets an answer the spec declares; never a 5xx."""
    case.call_and_validate(
        base_url=fuzzed_agent.url,
        headers={"Authorization": f"Bearer {fuzzed_agent.token}", "X-Hadeck-Actor": "fuzzer"},
        timeout=30,
    )
