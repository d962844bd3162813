"""The fleet as the console knows it: what each agent last said, and how fresh that is.

Pure data, no Textual: the screens render it, the poller feeds it, tests and
the benchmark drive it directly. The console never computes health itself; a
host's health is what its agent reported, and the only judgement made here is
about the connection (live, stale, down), which only the console can see.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from agent.schema import AuditRecord, Event, GroupStatus, HandoverRecord, HostStatus

Connection = Literal["connecting", "live", "stale", "down"]
Health = Literal["ok", "degraded", "down", "unknown"]
#: Severity order for colouring and sorting: higher is worse.
RANK = {"ok": 0, "unknown": 1, "degraded": 2, "stale": 3, "down": 4}
MAX_EVENTS = 5000


@dataclass
class HostState:
    name: str
    labels: dict[str, str]
    via: str
    status: HostStatus | None = None
    last_seen: float | None = None
    error: str | None = None
    error_since: float | None = None
    events_cursor: int | None = None
    #: What the fleet row shows of `status`, worked out once per poll, not once per redraw.
    digest: Digest | None = None
    roles: str = ""

    def connection(self, now: float, stale_after: float) -> Connection:
        if self.error is not None:
            # Never answered, or not answering for long: down. Recently answered: stale.
            if self.last_seen is None or now - self.last_seen > 3 * stale_after:
                return "down"
            return "stale"
        if self.last_seen is None:
            return "connecting"
        return "stale" if now - self.last_seen > stale_after else "live"

    def health(self) -> Health:
        return self.digest.health if self.digest is not None else "unknown"

    def badge(self, now: float, stale_after: float) -> str:
        """`live`, `stale 42s`, `down 3m`: what the operator needs to trust the row."""
        conn = self.connection(now, stale_after)
        if conn == "live" or conn == "connecting":
            return conn
        since = (self.last_seen if conn == "stale" else self.error_since) or now
        return f"{conn} {age(now - since)}"


def age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 90:
        return f"{s}s"
    if s < 90 * 60:
        return f"{s // 60}m"
    if s < 48 * 3600:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


@dataclass(frozen=True)
class Digest:
    services: str
    failing: str
    cpu: str
    memory: str
    disk: str
    down: int
    failing_count: int
    cpu_ratio: float
    memory_ratio: float
    fullest: float
    #: What the agent says of itself: down if a service is down, degraded if a probe fails,
    #: flaps or a recovery gave up.
    health: Health

    @classmethod
    def of(cls, st: HostStatus) -> Digest:
        up = st.summary.get("services_up", 0)
        down = st.summary.get("services_down", 0)
        failing = [p.name for p in st.probes if p.state == "down"]
        res = st.resources
        fullest = max((d.used_ratio for d in res.disks), default=None)
        return cls(
            f"{up}/{len(st.services)} up" + (f", {down} down" if down else ""),
            ", ".join(failing[:3]) + (f" +{len(failing) - 3}" if len(failing) > 3 else "") or "-",
            _pct(res.cpu_ratio),
            _pct(res.memory_used_ratio),
            _pct(fullest),
            down,
            len(failing),
            res.cpu_ratio or 0.0,
            res.memory_used_ratio or 0.0,
            fullest or 0.0,
            "down"
            if down
            else "degraded"
            if any(st.summary.get(k, 0) for k in ("probes_failing", "flapping", "gave_up"))
            else "ok",
        )


@dataclass(frozen=True)
class FleetRow:
    """One fleet-table row, already in display form; `key` stays the host name."""

    key: str
    status: str
    services: str
    failing: str
    roles: str
    cpu: str
    memory: str
    disk: str
    seen: str
    #: What colours the row: ok, unknown, degraded, stale, down.
    severity: str
    #: Raw values to sort by, per column.
    sort: tuple[object, ...]


COLUMNS = ("host", "status", "services", "failing", "roles", "cpu", "memory", "disk", "seen")
#: Columns where the worst or biggest first is what an operator wants by default.
DESCENDING = frozenset({"status", "services", "failing", "cpu", "memory", "disk"})


def _pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.0f}%"


@dataclass
class FleetModel:
    stale_after: float = 10.0
    hosts: dict[str, HostState] = field(default_factory=dict)
    events: deque[tuple[str, Event]] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    audit: dict[str, list[AuditRecord]] = field(default_factory=dict)

    def add_host(self, name: str, labels: dict[str, str], via: str) -> None:
        h = self.hosts[name] = HostState(name, dict(labels), via)
        h.roles = ",".join(v for k, v in sorted(labels.items()) if k == "role")

    # -- inputs (called on the UI thread with what a worker fetched) ---------

    def polled(self, name: str, status: HostStatus, events: Iterable[Event], now: float) -> None:
        h = self.hosts[name]
        h.status, h.last_seen, h.error, h.error_since = status, now, None, None
        h.digest = Digest.of(status)
        for e in events:
            if h.events_cursor is None or e.id > h.events_cursor:
                self.events.append((name, e))
                h.events_cursor = e.id

    def failed(self, name: str, error: str, now: float) -> None:
        h = self.hosts[name]
        if h.error is None:
            h.error_since = now
        h.error = error

    # -- views ---------------------------------------------------------------

    def row(self, h: HostState, now: float) -> FleetRow:
        conn = h.connection(now, self.stale_after)
        health = h.health()
        severity = conn if conn in ("stale", "down") else health
        d = h.digest
        roles = h.roles
        if d is None:
            return FleetRow(
                h.name,
                conn if conn != "live" else health,
                "-",
                "-",
                roles,
                "-",
                "-",
                "-",
                h.badge(now, self.stale_after),
                severity,
                (h.name, RANK[severity], 0, 0, roles, -1.0, -1.0, -1.0, h.last_seen or 0.0),
            )
        status = health if conn == "live" else conn
        return FleetRow(
            h.name,
            status,
            d.services,
            d.failing,
            roles,
            d.cpu,
            d.memory,
            d.disk,
            h.badge(now, self.stale_after),
            severity,
            (
                h.name,
                RANK[severity],
                d.down,
                d.failing_count,
                roles,
                d.cpu_ratio,
                d.memory_ratio,
                d.fullest,
                h.last_seen or 0.0,
            ),
        )

    def rows(
        self,
        now: float | None = None,
        *,
        sort: str = "status",
        reverse: bool | None = None,
        query: str = "",
    ) -> list[FleetRow]:
        """Filtered and sorted rows. Status sorts worst first; everything else ascending."""
        return self.view(now, sort=sort, reverse=reverse, query=query)[0]

    def view(
        self,
        now: float | None = None,
        *,
        sort: str = "status",
        reverse: bool | None = None,
        query: str = "",
    ) -> tuple[list[FleetRow], dict[str, int]]:
        """The rows to show and the counts of the whole fleet by severity, in one pass."""
        now = time.time() if now is None else now
        match = compile_filter(query)
        counts = dict.fromkeys(RANK, 0)
        rows = []
        for h in self.hosts.values():
            r = self.row(h, now)
            counts[r.severity] += 1
            if match(h, r):
                rows.append(r)
        col = COLUMNS.index(sort)
        if reverse is None:
            reverse = sort in DESCENDING
        rows.sort(key=lambda r: r.key)
        rows.sort(key=lambda r: r.sort[col], reverse=reverse)  # type: ignore[arg-type,return-value]
        return rows, counts

    def counts(self, now: float | None = None) -> dict[str, int]:
        return self.view(now)[1]

    def merged_events(
        self, host: str = "", service: str = "", severity: str = ""
    ) -> list[tuple[str, Event]]:
        """The fleet's events on one timeline, newest first."""
        order = {"info": 0, "warning": 1, "critical": 2}
        floor = order.get(severity, 0)
        picked = [
            (h, e)
            for h, e in self.events
            if (not host or h == host)
            and (not service or e.service == service)
            and order[e.severity] >= floor
        ]
        picked.sort(key=lambda he: he[1].ts, reverse=True)
        return picked

    def merged_audit(self) -> list[tuple[str, AuditRecord]]:
        out = [(h, r) for h, recs in self.audit.items() for r in recs]
        out.sort(key=lambda hr: hr[1].ts, reverse=True)
        return out

    def groups(self, now: float | None = None) -> list[GroupView]:
        now = time.time() if now is None else now
        return group_views(self.hosts.values(), now, self.stale_after)


# -- HA groups ---------------------------------------------------------------

#: Primary first, then the members changing role, then the standbys.
ROLE_ORDER = {"primary": 0, "demoting": 1, "promoting": 2, "standby": 3}


@dataclass(frozen=True)
class GroupMemberView:
    """One member of an HA group, as its own agent reports it (or, for a member whose host
    is not in the inventory or never answered, as the lease store's member record says)."""

    group: str
    member: str
    #: The inventory host whose agent is this member; None when only the store knows it.
    host: str | None
    role: str
    #: Whether it answers 200 on /groups/<g>/primary (None: its agent is not heard).
    routed: bool | None
    healthy: bool
    lag: float | None
    priority: int
    #: `eligible`, or why it cannot become primary (from the store's member records).
    note: str
    #: The console's connection to its host (None: no host).
    connection: Connection | None

    @property
    def key(self) -> str:
        return f"{self.group}/{self.member}"


@dataclass(frozen=True)
class GroupView:
    """An HA group as the console shows it: the members, and the group-wide state as one
    member reported it (`reported_by`: the leader's host if it is fresh, else another
    fresh one; when none is fresh, the leader's host again, else the most recently heard)."""

    name: str
    members: list[GroupMemberView]
    #: The host whose report `status` is, and the request target for group-wide actions.
    reported_by: str
    fresh: bool
    status: GroupStatus

    @property
    def leader(self) -> str | None:
        return self.status.leader

    @property
    def token(self) -> int | None:
        return self.status.token

    @property
    def lease_ttl_left(self) -> float | None:
        return self.status.lease_ttl_left

    @property
    def paused(self) -> bool:
        return self.status.paused

    @property
    def last_handover(self) -> HandoverRecord | None:
        return self.status.last_handover

    @property
    def request(self) -> dict[str, object] | None:
        return self.status.request

    def member(self, member: str) -> GroupMemberView | None:
        return next((m for m in self.members if m.member == member), None)

    def hosts(self) -> list[str]:
        """Hosts with an agent in this group, the reporting one first."""
        others = sorted({m.host for m in self.members if m.host and m.host != self.reported_by})
        return [self.reported_by, *others]


def group_views(hosts: Iterable[HostState], now: float, stale_after: float) -> list[GroupView]:
    """Every group any host reports, by name, each with its members primary first.

    Pure: what the agents last said, arranged. Which member is primary, healthy or
    eligible is the agents' judgement; the console adds only whether it still hears them.
    """
    reports: dict[str, list[tuple[HostState, GroupStatus, Connection]]] = {}
    for h in hosts:
        if h.status is None:
            continue
        conn = h.connection(now, stale_after)
        for g in h.status.groups:
            reports.setdefault(g.name, []).append((h, g, conn))
    views = []
    for name in sorted(reports):
        seen = reports[name]

        def preference(r: tuple[HostState, GroupStatus, Connection]) -> tuple[object, ...]:
            h, g, conn = r
            leads = g.leader is not None and g.leader == g.member
            return (conn != "live", not leads, -(h.last_seen or 0.0), h.name)

        best_host, best, best_conn = min(seen, key=preference)
        records = {r.member: r for r in best.members}
        members: dict[str, GroupMemberView] = {}
        for h, g, conn in seen:
            rec = records.get(g.member)
            members[g.member] = GroupMemberView(
                name, g.member, h.name, g.role, g.routed, g.healthy, g.lag, g.priority,
                rec.note if rec else "no member record in the lease store",
                conn,
            )  # fmt: skip
        for rec in best.members:
            if rec.member not in members:
                members[rec.member] = GroupMemberView(
                    name, rec.member, None, rec.role, None, rec.healthy, rec.lag, rec.priority,
                    rec.note, None,
                )  # fmt: skip
        ordered = sorted(
            members.values(),
            key=lambda m: (
                ROLE_ORDER.get(m.role, 4),
                m.note != "eligible",
                m.lag or 0.0,
                -m.priority,
                m.member,
            ),
        )
        views.append(GroupView(name, ordered, best_host.name, best_conn == "live", best))
    return views


def compile_filter(query: str) -> Callable[[HostState, FleetRow], bool]:
    """`/` filter: every word must match. `key=value` matches a label, `status:down` (or a
    bare status word) the row's status, anything else a substring of the host name."""
    words = query.lower().split()
    statuses = {"ok", "degraded", "down", "stale", "unknown", "live", "connecting"}

    def match(h: HostState, row: FleetRow) -> bool:
        for w in words:
            if "=" in w:
                k, _, v = w.partition("=")
                if h.labels.get(k, "").lower() != v:
                    return False
            elif w.startswith("status:") or w in statuses:
                if w.removeprefix("status:") not in (row.status, row.severity):
                    return False
            elif w not in h.name.lower():
                return False
        return True

    return match
