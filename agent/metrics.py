"""Prometheus metrics of one agent, on a registry of its own (docs/metrics.md lists them).

These are the core's and the always-running subsystems' (supervision, host resources);
a capability that may not be configured registers its own on the same registry when it
starts (HA groups: agent/failover/metrics.py), so a host without it exports none of them.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

STATES = ("up", "down", "unknown", "unavailable")
RECOVERY_STATES = ("idle", "recovering", "verifying", "backoff", "held", "gave_up")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.info = Info("hadeck_agent", "Agent version and host name.", registry=r)
        self.start_time = Gauge(
            "hadeck_agent_start_time_seconds", "Unix time the agent started.", registry=r
        )
        self.config_reloads = Counter(
            "hadeck_agent_config_reloads_total",
            "SIGHUP reloads by result (applied, rejected).",
            ["result"],
            registry=r,
        )
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
        self.actions = Counter(
            "hadeck_actions_total",
            "Actions, by operators and by the agent, by action and result (ok, failed, refused).",
            ["action", "result"],
            registry=r,
        )
        self.events = Counter(
            "hadeck_events_total",
            "Events raised, by kind and severity.",
            ["kind", "severity"],
            registry=r,
        )
        self.event_write_failures = Counter(
            "hadeck_event_write_failures_total",
            "Events the store could not write when they were raised (kept in memory, "
            "written later).",
            registry=r,
        )
        self.audit_write_failures = Counter(
            "hadeck_audit_write_failures_total",
            "Attempts to write audit records to disk that failed (first tries and retries).",
            registry=r,
        )
        self.audit_pending = Gauge(
            "hadeck_audit_pending_records",
            "Audit records kept in memory because they could not be written to disk yet.",
            registry=r,
        )
        self.cpu = Gauge("hadeck_host_cpu_usage_ratio", "Host CPU busy, 0 to 1.", registry=r)
        self.load1 = Gauge("hadeck_host_load1", "Host 1-minute load average.", registry=r)
        self.mem_used = Gauge("hadeck_host_memory_used_bytes", "Host memory in use.", registry=r)
        self.mem_total = Gauge("hadeck_host_memory_total_bytes", "Host memory in all.", registry=r)
        self.disk_free = Gauge(
            "hadeck_host_disk_free_bytes", "Free bytes per mount.", ["mount"], registry=r
        )
        self.disk_size = Gauge(
            "hadeck_host_disk_size_bytes", "Size in bytes per mount.", ["mount"], registry=r
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
