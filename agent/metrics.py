"""Prometheus metrics of one agent, on a registry of its own (docs/metrics.md lists them).

These are the core's: the agent itself, reloads, the journal's actions, events and the
audit log. Each subsystem registers its own on the same registry when it is built
(supervision: agent/supervision_metrics.py; host resources: agent/resources.py; HA
groups: agent/failover/metrics.py), so a host without a capability exports none of its
series.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    generate_latest,
)


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

    def render(self) -> bytes:
        return generate_latest(self.registry)
