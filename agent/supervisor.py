"""What the agent watches under one config: probe runners, services and their recovery ladders.

Data flows one way: a probe result goes through its detector; a probe state
change recomputes its services; a service state change raises an event and
moves the service's ladder. A SIGHUP reload builds a new Supervisor and keeps
the detectors of probes whose config did not change, so a reload does not
reset every state to unknown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from functools import partial

from agent import commands, runbooks
from agent.commands import CommandResult
from agent.config import AgentConfig, Service
from agent.detector import FailureDetector, Sample, State
from agent.events import EventLog
from agent.journal import Journal
from agent.probes.base import Probe
from agent.probes.results import ProbeResults
from agent.probes.runner import ProbeRunner, evidence
from agent.recovery.attempts import RecoveryAttempts
from agent.recovery.ladder import RecoveryLadder, ServiceView
from agent.supervision_metrics import STATES, SupervisionMetrics


def aggregate(states: list[State]) -> State:
    """A service is down if any probe is down, up when every available probe is up."""
    if State.DOWN in states:
        return State.DOWN
    available = [s for s in states if s is not State.UNAVAILABLE]
    if not available:
        return State.UNAVAILABLE
    return State.UP if all(s is State.UP for s in available) else State.UNKNOWN


class ServiceRuntime:
    def __init__(self, name: str, cfg: Service) -> None:
        self.name, self.cfg = name, cfg
        self.state, self.since = State.UNKNOWN, time.time()
        self.flapping = False
        self.lock = asyncio.Lock()  # one restart or runbook at a time, automatic or operator
        self.ladder: RecoveryLadder | None = None

    def is_up(self) -> bool:
        return self.state is State.UP


class Supervisor:
    def __init__(
        self,
        config: AgentConfig,
        events: EventLog,
        results: ProbeResults,
        attempts: RecoveryAttempts,
        metrics: SupervisionMetrics,
        journal: Journal,
        previous: Supervisor | None = None,
        checks: Mapping[str, Probe] | None = None,
    ) -> None:
        """`checks`: prebuilt checks by probe name (a reload builds them before it stops
        the old supervisor); an unchanged probe keeps its previous check."""
        self.config, self.events, self.metrics = config, events, metrics
        #: Called with a service's name whenever its state changes (HA groups listen).
        self.listeners: list[Callable[[str], None]] = []
        self.probes: dict[str, ProbeRunner] = {}
        kept = previous.probes if previous else {}
        for name, pcfg in config.probes.items():
            old = kept.get(name)
            check = (checks or {}).get(name)
            if old is not None and old.cfg == pcfg:
                detector, check = old.detector, old.check
            else:
                flap = pcfg.flap
                detector = FailureDetector(pcfg.fall, pcfg.rise, flap.window, flap.changes)
                if previous is None:
                    _restore_history(detector, results, name)
            self.probes[name] = ProbeRunner(
                name, pcfg, events, results, metrics, self._probe_changed, detector, check
            )
        self.services: dict[str, ServiceRuntime] = {}
        for name, scfg in config.services.items():
            svc = ServiceRuntime(name, scfg)
            for probe in scfg.probes:
                self.probes[probe].services.append(name)
            if scfg.recovery is not None:
                svc.ladder = RecoveryLadder(
                    name,
                    scfg.recovery,
                    ServiceView(
                        is_up=svc.is_up,
                        blockers=partial(self.blockers, svc),
                        run_step=partial(self.run_step, svc),
                    ),
                    events,
                    attempts,
                    metrics,
                    journal,
                    # A reload must not announce (and audit) a give-up that was already raised.
                    gave_up_announced=_gave_up(previous, name),
                )
            self.services[name] = svc
        for svc in self.services.values():
            self._recompute(svc, quiet=True)

    # -- data flow: probe -> service -> ladder --------------------------------

    def _probe_changed(self, runner: ProbeRunner) -> None:
        for name in runner.services:
            self._recompute(self.services[name])
        # Dependents and flapping holds may be waiting on this; ladders re-check cheaply.
        for svc in self.services.values():
            if svc.ladder is not None:
                svc.ladder.poke()

    def _recompute(self, svc: ServiceRuntime, quiet: bool = False) -> None:
        runners = [self.probes[p] for p in svc.cfg.probes]
        state = aggregate([r.state for r in runners])
        svc.flapping = any(r.detector.flapping for r in runners)
        self.metrics.service_flapping.labels(svc.name).set(1.0 if svc.flapping else 0.0)
        self.metrics.set_enum(self.metrics.service_state, (svc.name,), state.value, STATES)
        if state is svc.state:
            return
        before, svc.state, svc.since = svc.state, state, time.time()
        for listener in self.listeners:
            listener(svc.name)
        if not quiet and not (before is State.UNKNOWN and state is State.UP):
            failing = [r for r in runners if r.state is State.DOWN]
            self.events.emit(
                f"service_{state.value}",
                "critical" if state is State.DOWN else "info",
                f"service {svc.name} is {state.value}"
                + (
                    ": " + "; ".join(f"{r.name}: {r.detector.history[-1].detail}" for r in failing)
                    if failing
                    else ""
                ),
                service=svc.name,
                evidence={
                    "from": before.value,
                    "probes": {
                        r.name: {
                            "state": r.state.value,
                            "results": evidence(tuple(list(r.detector.history)[-r.cfg.fall :])),
                        }
                        for r in runners
                    },
                },
            )
        if svc.ladder is not None and state is State.DOWN:
            svc.ladder.service_down()

    def blockers(self, svc: ServiceRuntime) -> list[str]:
        reasons = [
            f"depends on {dep}, which is {self.services[dep].state.value}"
            for dep in svc.cfg.depends_on
            if self.services[dep].state in (State.DOWN, State.UNKNOWN)
        ]
        if svc.flapping:
            flapping = [p for p in svc.cfg.probes if self.probes[p].detector.flapping]
            reasons.append("probe " + ", ".join(flapping) + " is flapping")
        return reasons

    # -- commands -------------------------------------------------------------

    async def run_step(self, svc: ServiceRuntime, step: str) -> list[CommandResult]:
        """Run a ladder step ('restart' or a runbook name) under the service's lock."""
        async with svc.lock:
            if step == "restart":
                assert svc.cfg.restart is not None
                return [await commands.run(svc.cfg.restart.command, svc.cfg.restart.timeout)]
            return await runbooks.run_steps(self.config.runbooks[step].steps)

    def start(self) -> None:
        """Ladders of services already down start now (after a reload)."""
        for svc in self.services.values():
            if svc.ladder is not None and svc.state is State.DOWN:
                svc.ladder.service_down()

    async def stop(self) -> None:
        await asyncio.gather(
            *(s.ladder.stop() for s in self.services.values() if s.ladder is not None)
        )
        for runner in self.probes.values():
            runner.close()


def _gave_up(previous: Supervisor | None, service: str) -> bool:
    old = previous.services.get(service) if previous is not None else None
    return old is not None and old.ladder is not None and old.ladder.gave_up_announced


def _restore_history(detector: FailureDetector, results: ProbeResults, probe: str) -> None:
    """After an agent restart, the recent results on screen are the ones before it.

    Only the history: the state starts `unknown` and is learnt again from new
    runs, since the service may have changed while the agent was away.
    """
    rows = results.recent(probe, limit=detector.history.maxlen or 32)
    detector.history.extend(Sample(ts, ok, latency, detail) for ts, ok, latency, detail in rows)
