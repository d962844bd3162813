"""A fleet that exists only in memory, for pilot and snapshot tests of the console.

Fakes are for tests of the console's own behaviour (navigation, filter, sort,
confirmation, read-only); everything that talks to a real agent is tested
against a real agent in tests/integration.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from agent.schema import (
    ActionResult,
    DiskUsage,
    Event,
    GroupActionResult,
    GroupMemberStatus,
    GroupStatus,
    HandoverRecord,
    HostStatus,
    ProbeResult,
    ProbeStatus,
    RecoveryStatus,
    Resources,
    Runbook,
    ServiceStatus,
)
from console.agent_client import AgentClient
from console.fleet import FleetModel
from console.transport import Response, Transport, TransportError

NOW = 1_800_000_000.0  # a fixed clock: snapshots must not depend on the time of day
GROUP = "pg"
#: HA group `pg`: db-01 is the primary, db-04 its standby (the fleet screen does not show it).
GROUP_HOSTS = {"db-01": "primary", "db-04": "standby"}

HANDOVERS = [
    HandoverRecord(
        at=NOW - 3 * 3600,
        from_member="db-04",
        to_member="db-01",
        token=7,
        kind="switchover",
        reason="kernel update on db-04",
        actor="bob@bastion",
        steps={"detect": 0.0, "acquire": 0.004, "promote": 1.2},
    ),
    HandoverRecord(
        at=NOW - 2 * 86400,
        from_member=None,
        to_member="db-04",
        token=6,
        kind="failover",
        reason="no primary holds the lease",
        actor="hadeck-agent",
        steps={"detect": 4.9, "acquire": 0.003, "promote": 0.8},
    ),
]


def group_members(lag: float = 0.4) -> list[GroupMemberStatus]:
    return [
        GroupMemberStatus(
            member="db-01", healthy=True, lag=0.0, priority=100, role="primary",
            note="eligible", address="10.0.0.1:9441", updated_at=NOW - 0.5,
        ),
        GroupMemberStatus(
            member="db-04", healthy=True, lag=lag, priority=50, role="standby",
            note="eligible", address="10.0.0.4:9441", updated_at=NOW - 0.5,
        ),
    ]  # fmt: skip


def group_status(
    member: str, role: str, members: list[GroupMemberStatus] | None = None
) -> GroupStatus:
    members = members if members is not None else group_members()
    own = next((m for m in members if m.member == member), None)
    leader = next((m.member for m in members if m.role == "primary"), None)
    return GroupStatus(
        name=GROUP,
        member=member,
        role=role,
        routed=role == "primary",
        healthy=own.healthy if own else True,
        lag=own.lag if own else None,
        priority=own.priority if own else 100,
        service="postgres",
        paused=False,
        leader=leader,
        token=7 if leader else None,
        lease_ttl_left=8.5 if leader else None,
        valid_for=7.5 if role == "primary" else None,
        ttl=10.0,
        loop_wait=1.0,
        store="etcd http://10.0.0.9:2379",
        store_error=None,
        request=None,
        members=members,
        last_handover=HANDOVERS[0],
    )


def host_status(
    name: str,
    *,
    down: bool = False,
    cpu: float = 0.1,
    seed: int = 0,
    groups: list[GroupStatus] | None = None,
) -> HostStatus:
    recent = [
        ProbeResult(
            ts=NOW - 10 + i,
            ok=not (down and i > 7),
            latency_seconds=0.002 + 0.001 * ((i + seed) % 5),
            detail="HTTP 200",
        )
        for i in range(10)
    ]
    probe = ProbeStatus(
        name="web-http",
        kind="http",
        target="GET http://127.0.0.1:8080/health",
        state="down" if down else "up",
        since=NOW - 60,
        flapping=False,
        interval_seconds=1,
        fall=2,
        rise=1,
        consecutive_failures=2 if down else 0,
        consecutive_successes=0 if down else 10,
        services=["web"],
        last=recent[-1],
        recent=recent,
    )
    recovery = RecoveryStatus(
        state="gave_up" if down else "idle",
        reason="5 attempts within 600s did not bring it back" if down else "",
        attempts_in_window=5 if down else 0,
        max_attempts=5,
        window_seconds=600,
        next_attempt_at=None,
        steps=["restart"],
        history=[],
    )
    service = ServiceStatus(
        name="web",
        state="down" if down else "up",
        since=NOW - 60,
        flapping=False,
        probes=["web-http"],
        depends_on=[],
        restartable=True,
        restart_command=["systemctl", "restart", "web.service"],
        recovery=recovery,
    )
    return HostStatus(
        host=name,
        version="0.1.0",
        started_at=NOW - 3600,
        uptime_seconds=3600,
        now=NOW,
        config_loaded_at=NOW - 3600,
        summary={
            "services_up": 0 if down else 1,
            "services_down": 1 if down else 0,
            "probes_failing": 1 if down else 0,
            "flapping": 0,
            "gave_up": 1 if down else 0,
        },
        services=[service],
        probes=[probe],
        resources=Resources(
            sampled_at=NOW,
            cpu_ratio=cpu,
            load1=0.5,
            memory_total_bytes=8 << 30,
            memory_used_bytes=2 << 30,
            memory_used_ratio=0.25,
            disks=[
                DiskUsage(mount="/", total_bytes=100 << 30, free_bytes=40 << 30, used_ratio=0.6)
            ],
        ),
        problems=[],
        runbooks=[
            Runbook(
                name="flush-cache",
                description="drop the app cache",
                steps=[["app", "cache", "flush"]],
            )
        ],
        groups=groups or [],
    )


class FakeTransport(Transport):
    """Answers like an agent would, from a HostStatus; records every POST.

    Group actions (`/api/v1/groups/<g>/<action>`) succeed at once with a GroupActionResult
    naming the requested target; `/history` answers HANDOVERS.
    """

    def __init__(self, name: str, status: HostStatus, events: list[Event] | None = None) -> None:
        self.name = name
        self.status = status
        self.events = events or []
        self.describe = f"fake://{name}"
        self.posts: list[tuple[str, dict[str, Any] | None, dict[str, str]]] = []
        self.reachable = True
        self.lock = threading.Lock()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float,
    ) -> Response:
        if not self.reachable:
            raise TransportError(f"{self.name}: connection refused")
        if method == "POST":
            with self.lock:
                self.posts.append((path, body, dict(headers or {})))
            if path.startswith("/api/v1/groups/"):
                _, _, _, _, group, action = path.split("/")
                gs = next((g for g in self.status.groups if g.name == group), None)
                leader = gs.leader if gs else None
                # No target: a pause or resume leaves the primary, a switchover takes a standby.
                members = gs.members if gs else []
                standby = next((m.member for m in members if m.member != leader), None)
                to = (body or {}).get("to") or (
                    leader if action in ("pause", "resume") else standby
                )
                done = GroupActionResult(
                    ok=True,
                    action=action,
                    group=group,
                    actor=(headers or {}).get("X-Hadeck-Actor", "?"),
                    message={"pause": "paused", "resume": "resumed"}.get(
                        action, f"{to} is primary after 2.1s"
                    ),
                    from_member=leader,
                    to_member=to,
                    duration_seconds=2.1,
                    audit_seq=2,
                )
                return Response(200, done.model_dump_json().encode())
            result = ActionResult(
                ok=True,
                action="restart",
                target=path.split("/")[-2],
                actor=(headers or {}).get("X-Hadeck-Actor", "?"),
                started_at=NOW,
                duration_seconds=0.5,
                message="exit 0 in 0.50s",
                audit_seq=1,
            )
            return Response(200, result.model_dump_json().encode())
        if path.startswith("/api/v1/status"):
            return Response(200, self.status.model_dump_json().encode())
        if path.startswith("/api/v1/events"):
            return Response(200, json.dumps([e.model_dump() for e in self.events]).encode())
        if path.startswith("/api/v1/audit"):
            return Response(200, b"[]")
        if path.startswith("/api/v1/groups/") and path.split("?")[0].endswith("/history"):
            return Response(200, json.dumps([h.model_dump() for h in HANDOVERS]).encode())
        return Response(404, b'{"error": "not found"}')

    def read_token(self, timeout: float) -> str:
        return "fake-token-0123456789"

    def close(self) -> None:
        pass


def fleet(
    n: int = 6, down: tuple[int, ...] = (2,)
) -> tuple[FleetModel, dict[str, AgentClient], dict[str, FakeTransport]]:
    model = FleetModel(stale_after=10.0)
    clients: dict[str, AgentClient] = {}
    transports: dict[str, FakeTransport] = {}
    for i in range(n):
        name = f"web-{i + 1:02d}" if i % 3 else f"db-{i + 1:02d}"
        role = GROUP_HOSTS.get(name)
        groups = [group_status(name, role)] if role else None
        status = host_status(name, down=i in down, cpu=0.05 * (i + 1), seed=i, groups=groups)
        events = [
            Event(
                id=1,
                ts=NOW - 100 + i,
                kind="agent_started",
                severity="info",
                service=None,
                probe=None,
                message=f"hadeck-agent 0.1.0 started on {name}",
                evidence={},
            ),
        ]
        if i in down:
            events.append(
                Event(
                    id=2,
                    ts=NOW - 50 + i,
                    kind="service_down",
                    severity="critical",
                    service="web",
                    probe=None,
                    message="service web is down: web-http: ConnectError",
                    evidence={"from": "up"},
                )
            )
        t = FakeTransport(name, status, events)
        transports[name] = t
        clients[name] = AgentClient(t, timeout=2)
        model.add_host(
            name,
            {"role": "db" if name.startswith("db") else "web", "dc": f"dc{i % 2 + 1}"},
            t.describe,
        )
    return model, clients, transports
