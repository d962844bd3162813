"""The supervision subsystem's metrics: probes, services and their recovery ladders.

Registered once, when the subsystem is built, on the agent's registry; a reload keeps the
series objects and clears the per-probe and per-service states (`clear_states`) so that a
removed probe stops being exported.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STATES = ("up", "down", "unknown", "unavailable")
RECOVERY_STATES = ("idle", "recovering", "verifying", "backoff", "held", "gave_up")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class SupervisionMetrics:
    def __init__(self, r: CollectorRegistry) -> None:
        self.probe_state = Gauge(
            "hadeck_probe_state",
            "1 for the probe's current state (up, down, unknown, unavailable), 0 for the others.",
            ["probe", "kind", "state"],
            registry=r,
        )
        self.probe_flapping = Gauge(
            "hadeck_probe_flapping", "1 while the probe is flapping.", ["probe"], registry=r
        )
        self.probe_duration = Histogram(
            "hadeck_probe_duration_seconds",
            "Time one probe check took.",
            ["probe", "kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.probe_runs = Counter(
            "hadeck_probe_runs_total",
            "Probe checks by result (success, failure).",
            ["probe", "kind", "result"],
            registry=r,
        )
        self.service_state = Gauge(
            "hadeck_service_state",
            "1 for the service's current state (up, down, unknown, unavailable), 0 for the others.",
            ["service", "state"],
            registry=r,
        )
        self.service_flapping = Gauge(
            "hadeck_service_flapping",
            "1 while any probe of the service flaps.",
            ["service"],
            registry=r,
        )
        self.recovery_state = Gauge(
            "hadeck_recovery_state",
            "1 for the service's recovery state "
            "(idle, recovering, verifying, backoff, held, gave_up).",
            ["service", "state"],
            registry=r,
        )
        self.recovery_attempts = Counter(
            "hadeck_recovery_attempts_total",
            "Automatic recovery attempts by step and result (recovered, failed).",
            ["service", "step", "result"],
            registry=r,
        )

    def set_enum(
        self, gauge: Gauge, labels: tuple[str, ...], value: str, states: tuple[str, ...]
    ) -> None:
        for state in states:
            gauge.labels(*labels, state).set(1.0 if state == value else 0.0)

    def clear_states(self) -> None:
        """Forget per-probe and per-service state series (a reload republishes the current ones)."""
        for gauge in (
            self.probe_state,
            self.probe_flapping,
            self.service_state,
            self.service_flapping,
            self.recovery_state,
        ):
            gauge.clear()
