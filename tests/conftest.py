from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

from console.demo.component import stop_all  # noqa: E402
from tests.support.agent import AgentProcess, DemoService  # noqa: E402


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[DemoService]]:
    """Demo services a test creates with `make`; all are killed afterwards."""
    made: list[DemoService] = []
    yield made
    for svc in made:
        svc.stop()


@pytest.fixture
def demo_service(tmp_path: Path, services: list[DemoService]) -> DemoService:
    svc = DemoService(tmp_path)
    services.append(svc)
    svc.start()
    return svc


@pytest.fixture
def agents(tmp_path: Path, services: list[DemoService]) -> Iterator[list[AgentProcess]]:
    """Agent processes a test starts; stopped afterwards (SIGTERM, side by side, so each
    writes what it must, coverage data included), before the services (which the agents
    would otherwise restart as they are torn down). One that has to be killed fails the
    test: not stopping on SIGTERM is a bug."""
    started: list[AgentProcess] = []
    yield started
    errors = stop_all(agent.component for agent in started)
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture
def start_agent(tmp_path: Path, agents: list[AgentProcess]):  # type: ignore[no-untyped-def]
    def start(config: dict, name: str = "a") -> AgentProcess:  # type: ignore[type-arg]
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        agent = AgentProcess(d, config)
        agents.append(agent)
        return agent.start()

    return start
