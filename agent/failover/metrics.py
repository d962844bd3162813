"""The HA groups' metrics, registered on the agent's registry only where groups are
configured (a host without groups exports no `hadeck_group_*` series at all)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

ROLES = ("standby", "promoting", "primary", "demoting")


class GroupMetrics:
    def __init__(self, r: CollectorRegistry) -> None:
        self.role = Gauge(
            "hadeck_group_role",
            "1 for this member's current role in the HA group, 0 for the others.",
            ["group", "member", "role"],
            registry=r,
        )
        self.routed = Gauge(
            "hadeck_group_routed",
            "1 while this member answers 200 on /groups/<group>/primary (as of its last loop).",
            ["group"],
            registry=r,
        )
        self.lease_valid = Gauge(
            "hadeck_group_lease_valid_seconds",
            "Seconds this primary stays valid without another renewal (0 when not primary).",
            ["group"],
            registry=r,
        )
        self.promotions = Counter(
            "hadeck_group_promotions_total",
            "Times this member became primary, by kind (failover, switchover).",
            ["group", "kind"],
            registry=r,
        )
        self.renew_failures = Counter(
            "hadeck_group_lease_renew_failures_total",
            "Lease renewals that failed because the lease store did not answer.",
            ["group"],
            registry=r,
        )

        self.failsafe = Gauge(
            "hadeck_group_failsafe",
            "1 while this primary keeps its role by failsafe mode alone (lease store "
            "unreachable, every other member acknowledging it).",
            ["group"],
            registry=r,
        )

    def set_role(self, group: str, member: str, role: str) -> None:
        for state in ROLES:
            self.role.labels(group, member, state).set(1.0 if state == role else 0.0)
