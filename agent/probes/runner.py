"""Runs one probe: deadline, result into the history and metrics, then through its failure detector.

A run can never delay another probe: every check is a coroutine with its own
deadline, blocking work happens in threads, and a per-probe lock means a run
requested through the API, or a scheduled run that the agent's tick brought a
little early, waits for the previous one instead of overlapping it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from agent import probes
from agent.blocking import StillBlocked
from agent.config import ProbeConfig
from agent.detector import Change, FailureDetector, Sample, State
from agent.events import EventLog
from agent.probes.base import Outcome, Probe
from agent.probes.results import ProbeResults
from agent.schema import ProbeResult
from agent.supervision_metrics import STATES, SupervisionMetrics

# Past its own timeout a check gets this long to end the work it started (kill a command).
DEADLINE_MARGIN = 0.25


def wire(sample: Sample) -> ProbeResult:
    return ProbeResult(
        ts=sample.ts, ok=sample.ok, latency_seconds=round(sample.latency, 6), detail=sample.detail
    )


def evidence(samples: tuple[Sample, ...]) -> list[dict[str, object]]:
    return [wire(s).model_dump() for s in samples]


class ProbeRunner:
    def __init__(
        self,
        name: str,
        cfg: ProbeConfig,
        events: EventLog,
        results: ProbeResults,
        metrics: SupervisionMetrics,
        on_change: Callable[[ProbeRunner], None],
        detector: FailureDetector,
        check: Probe | None = None,
    ) -> None:
        self.name, self.cfg = name, cfg
        # A reload hands over the check of an unchanged probe: with it, the read that may
        # still hang on a dead mount (agent/blocking.py), so no second one is started.
        self.check = check or probes.build(cfg)
        self.detector = detector
        self.events, self.results, self.metrics = events, results, metrics
        self.on_change = on_change
        self.services: list[str] = []
        self._lock = asyncio.Lock()
        self.closed = False  # after a reload replaced this runner, its in-flight result is dropped
        # Resolved once: a labels() lookup per run is a lock and a dict walk for nothing.
        self._duration = metrics.probe_duration.labels(name, cfg.kind)
        self._runs = {
            result: metrics.probe_runs.labels(name, cfg.kind, result)
            for result in ("success", "failure", "unavailable")
        }
        self._publish_state()

    @property
    def state(self) -> State:
        return self.detector.state

    async def run(self) -> Sample:
        async with self._lock:
            ts, started = time.time(), time.monotonic()
            try:
                async with asyncio.timeout(self.cfg.timeout + DEADLINE_MARGIN):
                    outcome = await self.check.check()
            except TimeoutError:
                outcome = Outcome(False, f"no answer within {self.cfg.timeout:g}s")
            except StillBlocked as exc:
                outcome = Outcome(False, str(exc))
            except asyncio.CancelledError:
                if not self.closed:
                    raise
                # The agent is stopping (its supervisor closed this runner) and asyncio ends
                # the runs still in flight: the scheduler would log each as a job's
                # traceback. There is nothing to record; the command's group was ended.
                return Sample(ts, False, time.monotonic() - started, "the agent stopped")
            except Exception as exc:  # a probe bug must not kill the scheduler job
                outcome = Outcome(False, f"probe error: {type(exc).__name__}: {exc}")
            sample = Sample(
                ts, outcome.ok, time.monotonic() - started, outcome.detail, outcome.available
            )
            if self.closed:
                return sample
            self.results.add(self.name, ts, sample.ok, sample.latency, sample.detail)
            self._duration.observe(sample.latency)
            # A probe that cannot run here (systemd in a container) is not a failing service:
            # counting it as one would fire every failure-rate alert.
            result = (
                "unavailable" if not sample.available else "success" if sample.ok else "failure"
            )
            self._runs[result].inc()
            change = self.detector.observe(sample)
            if change is not None:
                self._report(change)
                self.on_change(self)
            return sample

    def _publish_state(self) -> None:
        self.metrics.set_enum(
            self.metrics.probe_state, (self.name, self.cfg.kind), self.state.value, STATES
        )
        self.metrics.probe_flapping.labels(self.name).set(1.0 if self.detector.flapping else 0.0)

    def _report(self, change: Change) -> None:
        self._publish_state()
        proof = {"results": evidence(change.evidence)}
        to = change.state_to
        # Learning that a new probe is up is not news; every other move is an event.
        if to is not None and not (change.state_from is State.UNKNOWN and to is State.UP):
            rule = {
                State.DOWN: f" after {self.cfg.fall} failures",
                State.UP: f" after {self.cfg.rise} successes" if self.cfg.rise > 1 else "",
            }
            last = change.evidence[-1].detail if change.evidence else ""
            self.events.emit(
                f"probe_{to.value}",
                "warning" if to is State.DOWN else "info",
                f"probe {self.name} is {to.value}{rule.get(to, '')}: {last}",
                probe=self.name,
                evidence={**proof, "from": change.state_from.value if change.state_from else None},
            )
        if change.flapping is True:
            self.events.emit(
                "probe_flapping",
                "warning",
                f"probe {self.name} is flapping: {self.cfg.flap.changes} state changes within "
                f"{self.cfg.flap.window:g}s; automatic recovery of its services is held",
                probe=self.name,
                evidence=proof,
            )
        elif change.flapping is False:
            self.events.emit(
                "probe_flapping_ended",
                "info",
                f"probe {self.name} stopped flapping: stable for {self.cfg.flap.window:g}s",
                probe=self.name,
                evidence=proof,
            )

    def recent(self, n: int = 20) -> list[ProbeResult]:
        return [wire(s) for s in list(self.detector.history)[-n:]]

    def close(self) -> None:
        self.closed = True
