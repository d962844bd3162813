from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

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
    """Agent processes a test starts; killed afterwards, before the services (which the
    agents would otherwise restart as they are torn down)."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()


@pytest.fixture
def start_agent(tmp_path: Path, agents: list[AgentProcess]):  # type: ignore[no-untyped-def]
    def start(config: dict, name: str = "a") -> AgentProcess:  # type: ignore[type-arg]
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        agent = AgentProcess(d, config)
        agents.append(agent)
        return agent.start()

    return start
