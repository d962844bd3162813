"""A reload is prepared by every subsystem before any applies: one subsystem that cannot
build its part rejects the whole reload, and what another prepared is not applied.

The daemon runs in this process (no listeners), so a subsystem's build can be made to
fail where no config can make it fail: these are the paths that guard against a check
or a trigger that check-config let through (tests/integration/test_reload.py drives the
ones a config file can reach, through a real agent and SIGHUP).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent import config, probes
from agent.daemon import Agent
from agent.scheduler import LoopScheduler
from agent.subsystem import ReloadError, Timing


def _config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "agent": {"name": "t", "state_dir": str(tmp_path / "state")},
        "api": {"listen": "127.0.0.1:1"},
        "audit": {"path": str(tmp_path / "audit.jsonl")},
        "probes": {"web": {"kind": "tcp", "host": "127.0.0.1", "port": 1, "interval": "30s"}},
        "services": {"web": {"probes": ["web"]}},
        "resources": {"interval": "30s"},
        **extra,
    }


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Agent]:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path)))
    agent = Agent(config.load(path), path)
    scheduler = LoopScheduler(event_loop=asyncio.get_running_loop())
    agent._open(scheduler)
    scheduler.start()
    for sub in agent.subsystems:
        sub.start()
    yield agent
    for sub in reversed(agent.subsystems):
        await sub.stop()
    scheduler.shutdown(wait=False)
    agent.store.close()
    agent.audit.close()


def _rejections(agent: Agent) -> list[Any]:
    return [e for e in agent.store.events() if e.kind == "config_reload_rejected"]


def _reloads(agent: Agent, result: str) -> float:
    value = agent.metrics.registry.get_sample_value(
        "hadeck_agent_config_reloads_total", {"result": result}
    )
    return value or 0.0


async def test_a_probe_whose_check_cannot_be_built_rejects_the_whole_reload(
    running: Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = running
    real_build = probes.build

    def build(cfg: Any) -> Any:
        if getattr(cfg, "port", None) == 2:
            raise ValueError("no such socket family")
        return real_build(cfg)

    monkeypatch.setattr(probes, "build", build)
    new = _config(tmp_path, resources={"interval": "5s"})
    new["probes"]["later"] = {"kind": "tcp", "host": "127.0.0.1", "port": 2, "interval": "30s"}
    agent.config_path.write_text(yaml.safe_dump(new))
    old = agent.config

    await agent.reload()

    [event] = _rejections(agent)
    assert event.evidence["problems"] == [
        f"{agent.config_path}: probes.later: cannot be built: no such socket family"
    ]
    assert str(agent.config_path) in event.message
    assert (_reloads(agent, "rejected"), _reloads(agent, "applied")) == (1, 0)
    # Nothing applied: not the probes, not host resources' new interval, which prepared.
    assert agent.config is old and set(agent.supervisor.probes) == {"web"}
    assert agent.host.config.resources.interval == 30
    jobs = {j.id: j for j in agent.core.scheduler.get_jobs()}
    assert set(jobs) == {"probes:web", "resources:sample"}
    assert jobs["resources:sample"].trigger.interval.total_seconds() == 30


async def test_problems_of_every_subsystem_are_reported_together(
    running: Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator fixes every problem in one edit, not one per SIGHUP."""
    agent = running

    def never(where: str, *_: Any) -> Any:
        raise ReloadError([f"{where}: cannot be scheduled: too far"])

    monkeypatch.setattr(Timing, "of", staticmethod(never))  # every subsystem's triggers
    agent.config_path.write_text(yaml.safe_dump(_config(tmp_path, resources={"interval": "5s"})))

    await agent.reload()

    [event] = _rejections(agent)
    assert sorted(event.evidence["problems"]) == [
        f"{agent.config_path}: probes.web: cannot be scheduled: too far",
        f"{agent.config_path}: resources.interval: cannot be scheduled: too far",
    ]
    assert set(agent.supervisor.probes) == {"web"}
    assert agent.host.config.resources.interval == 30
    assert [e for e in agent.store.events() if e.kind == "config_reloaded"] == []
