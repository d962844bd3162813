"""The supervision subsystem: probes, services, their recovery ladders, runbooks, actions.

It owns the `probes`, `services` and `runbooks` sections and one job per probe.
A reload first builds every changed probe's check and every probe's trigger,
then replaces the running supervisor; a probe whose config did not change keeps
its detector and its check (and with it a read still hung on a dead mount).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from agent import probes
from agent.actions import Actions
from agent.config import AgentConfig
from agent.detector import State
from agent.probes.base import Probe
from agent.probes.results import ProbeResults
from agent.recovery.attempts import RecoveryAttempts
from agent.scheduler import every, in_seconds
from agent.subsystem import Core, Job, JobSet, ReloadError, Subsystem, Timing
from agent.supervision_metrics import SupervisionMetrics
from agent.supervisor import Supervisor

if TYPE_CHECKING:
    from fastapi import APIRouter

    from agent.failover.member import ServiceHealth


def _timings(cfg: AgentConfig) -> dict[str, Timing]:
    """Every probe's schedule, or a ReloadError naming each probe that cannot have one."""
    timings, problems = {}, []
    for name, p in cfg.probes.items():
        try:
            timings[name] = Timing.of(
                f"probes.{name}",
                partial(every, p.interval, p.jitter),
                partial(in_seconds, random.uniform(0, p.jitter)),  # noqa: S311
            )
        except ReloadError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ReloadError(problems)
    return timings


class Supervision(Subsystem):
    name = "probes"
    sections = ("probes", "services", "runbooks")

    def __init__(self, core: Core, cfg: AgentConfig) -> None:
        super().__init__(core, cfg)
        #: Called with a service's name whenever its state changes (HA groups listen).
        self.listeners: list[Callable[[str], None]] = []
        self.jobs = JobSet(core.scheduler, self.name, core.events)
        self.metrics = SupervisionMetrics(core.metrics.registry)
        self.results = ProbeResults(core.store)
        self.attempts = RecoveryAttempts(core.store)
        self._retain(cfg)
        self._timings = _timings(cfg)
        self.supervisor = self._supervisor(cfg, None, {})
        self.actions = Actions(self.supervisor, core.journal)

    def routers(self) -> Sequence[APIRouter]:
        from agent.api.app import supervision_routers

        return supervision_routers(self)

    def _supervisor(
        self, cfg: AgentConfig, previous: Supervisor | None, checks: dict[str, Probe]
    ) -> Supervisor:
        c = self.core
        sup = Supervisor(
            cfg, c.events, self.results, self.attempts, self.metrics, c.journal, previous, checks
        )
        sup.listeners.append(self._service_changed)
        return sup

    def _retain(self, cfg: AgentConfig) -> None:
        """From the `retention` section: attempts are kept as long as events."""
        r = cfg.retention
        self.results.retain(r.probe_results, r.max_probe_results)
        self.attempts.retain(r.events)

    def _service_changed(self, service: str) -> None:
        for listener in self.listeners:
            listener(service)

    def start(self) -> None:
        self.jobs.replace(
            [
                Job(
                    name,
                    runner.run,
                    self._timings[name],
                    {
                        # The tick can bring a run up to 250 ms closer to the previous one,
                        # which may still be going when its timeout is close to the
                        # interval: that run waits for it (the runner's lock) instead of
                        # being skipped. One at most.
                        "max_instances": 2,
                        "coalesce": True,
                        "misfire_grace_time": max(1, int(runner.cfg.interval)),
                    },
                )
                for name, runner in self.supervisor.probes.items()
            ]
        )
        self.supervisor.start()

    async def stop(self) -> None:
        self.jobs.clear()
        await self.supervisor.stop()

    def prepare(self, new: AgentConfig) -> _Reload:
        old, kept = self.config, self.supervisor.probes
        checks: dict[str, Probe] = {}
        problems = []
        for name, pcfg in new.probes.items():
            if name in kept and kept[name].cfg == pcfg:
                continue  # keeps its check (see the module's doc)
            try:
                checks[name] = probes.build(pcfg)
            except Exception as exc:
                problems.append(f"probes.{name}: cannot be built: {exc}")
        try:
            timings = _timings(new)
        except ReloadError as exc:
            problems.extend(exc.problems)
        if problems:
            raise ReloadError(problems)
        return _Reload(
            self,
            new,
            checks,
            timings,
            {
                "added": sorted(set(new.probes) - set(old.probes)),
                "removed": sorted(set(old.probes) - set(new.probes)),
                "changed": sorted(
                    n for n in set(new.probes) & set(old.probes) if new.probes[n] != old.probes[n]
                ),
            },
        )

    def service_health(self, service: str) -> ServiceHealth:
        """What an HA group member needs to know about its service."""
        from agent.failover.member import ServiceHealth  # only HA groups ask

        sup = self.supervisor
        svc = sup.services.get(service)
        if svc is None:
            return ServiceHealth(False, None, "not in the config", None)
        failing = [
            f"{p}: {sup.probes[p].detector.history[-1].detail}"
            for p in svc.cfg.probes
            if sup.probes[p].state is State.DOWN and sup.probes[p].detector.history
        ]
        return ServiceHealth(
            up=svc.state is State.UP,
            down_since=svc.since if svc.state is State.DOWN else None,
            detail="; ".join(failing) or svc.state.value,
            recovery=svc.ladder.state if svc.ladder is not None else None,
        )


@dataclass
class _Reload:
    owner: Supervision
    new: AgentConfig
    checks: dict[str, Probe]
    timings: dict[str, Timing]
    summary: dict[str, Any]

    @property
    def headline(self) -> str:
        added, removed, changed = (self.summary[k] for k in ("added", "removed", "changed"))
        return f"probes +{len(added)} -{len(removed)} ~{len(changed)}"

    async def apply(self) -> None:
        s = self.owner
        previous = s.supervisor
        await s.stop()
        s.metrics.clear_states()
        s.config, s._timings = self.new, self.timings
        s._retain(self.new)
        s.supervisor = s._supervisor(self.new, previous, self.checks)
        s.actions.supervisor = s.supervisor
        s.start()
