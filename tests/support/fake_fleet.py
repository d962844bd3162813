"""A fleet that exists only in memory, for pilot and snapshot tests of the console.

Fakes are for tests of the console's own behaviour (navigation, filter, sort,
confirmation, read-only); everything that talks to a real agent is tested
against a real agent in tests/integration.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from typing import Any

from pydantic import BaseModel

from agent.schema import (
    ActionResult,
    AuditRecord,
    DiskUsage,
    Event,
    GroupActionResult,
    GroupMemberStatus,
    GroupStatus,
    HandoverRecord,
    HostStatus,
    Operation,
    OperationProgress,
    Plan,
    PlanCandidate,
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
        steps={"detect": 0.0, "wait": 0.0, "acquire": 0.004, "promote": 1.2},
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

    Group actions (`/api/v1/groups/<g>/<action>`) succeed: a switchover or failover answers
    202 with an operation that has ended when first asked for, pause and resume a
    GroupActionResult at once, naming the requested target; `/history` answers HANDOVERS.
    `dry_run` answers a Plan (a group's: its standbys ranked as listed).
    """

    def __init__(self, name: str, status: HostStatus, events: list[Event] | None = None) -> None:
        self.name = name
        self.status = status
        self.events = events or []
        #: What /api/v1/audit answers, newest last as an agent keeps them.
        self.audit: list[AuditRecord] = []
        self.describe = f"fake://{name}"
        self.posts: list[tuple[str, dict[str, Any] | None, dict[str, str]]] = []
        self.plans: list[tuple[str, dict[str, Any] | None, dict[str, str]]] = []
        self.reachable = True
        self.lock = threading.Lock()
        self.operations: dict[str, Operation] = {}
        #: Seconds each next dry run takes to answer, in order (then at once).
        self.plan_delays: list[float] = []

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
            with self.lock:  # a dry run changes nothing: it is not among the posts
                sent = self.plans if (body or {}).get("dry_run") else self.posts
                sent.append((path, body, dict(headers or {})))
                delay = self.plan_delays.pop(0) if sent is self.plans and self.plan_delays else 0
            time.sleep(delay)  # a slow agent (the console calls from a worker thread)
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
                if (body or {}).get("dry_run"):
                    return _json(_group_plan(action, group, leader, to, members))
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
                if action in ("switchover", "failover"):
                    op = _operation(f"group_{action}", group, done)
                    self.operations[op.id] = op
                    return Response(
                        202, op.model_copy(update={"state": "running"}).model_dump_json().encode()
                    )
                return Response(200, done.model_dump_json().encode())
            if (body or {}).get("dry_run"):
                target = path.split("/")[-2]
                svc = next((x for x in self.status.services if x.name == target), None)
                argv = svc.restart_command if svc and svc.restart_command else ["true"]
                plan = Plan(
                    action=path.split("/")[-1],
                    target=target,
                    ok=True,
                    refusal=None,
                    status=200,
                    steps=[shlex.join(argv)],
                )
                return _json(plan)
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
        if path.startswith("/api/v1/operations/"):
            found = self.operations.get(path.rsplit("/", 1)[-1])
            return _json(found) if found else Response(404, b'{"error": "no operation"}')
        if path.startswith("/api/v1/status"):
            return Response(200, self.status.model_dump_json().encode())
        if path.startswith("/api/v1/events"):
            return Response(200, json.dumps([e.model_dump() for e in self.events]).encode())
        if path.startswith("/api/v1/audit"):
            return Response(200, json.dumps([r.model_dump() for r in self.audit]).encode())
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


def _json(model: BaseModel) -> Response:
    return Response(200, model.model_dump_json().encode())


def _operation(type: str, target: str, result: GroupActionResult) -> Operation:
    return Operation(
        id=f"op-{len(target):012x}",
        type=type,
        target=target,
        actor=result.actor,
        params={},
        state="succeeded",
        created_at=NOW,
        finished_at=NOW + result.duration_seconds,
        duration_seconds=result.duration_seconds,
        progress=OperationProgress(message=result.message, fraction=1.0),
        result=result.model_dump(mode="json"),
        error=None,
    )


def _group_plan(
    action: str, group: str, leader: str | None, to: str | None, members: list[GroupMemberStatus]
) -> Plan:
    """Worded as the agent words it (agent/failover/operations.py), without its checks."""
    handover = action in ("switchover", "failover")
    target = next((m for m in members if m.member == to), None)
    steps = [f"{leader} runs its demote hook and releases the lease of {group}"]
    if target is not None:
        steps.append(
            f"{to} (lag {target.lag or 0:.1f}s, priority {target.priority}) takes the lease and "
            "runs its promote hook"
        )
    warnings = []
    if action == "failover" and target is not None and target.lag:
        warnings.append(
            f"{to} lags {target.lag:.1f}s behind the primary: up to {target.lag:.1f}s of writes "
            "it has not replicated may be lost"
        )
    elif action == "switchover" and leader:
        warnings.append(f"clients connected to {leader} are cut when it demotes")
    standbys = [m for m in members if m.member != leader]
    return Plan(
        action=action,
        target=group,
        ok=True,
        refusal=None,
        status=202 if handover else 200,
        steps=steps,
        warnings=warnings,
        confirm=group if action == "failover" else None,
        from_member=leader,
        to_member=to,
        candidates=[
            PlanCandidate(member=m.member, healthy=m.healthy, lag=m.lag, priority=m.priority,
                          note=m.note, rank=i + 1)
            for i, m in enumerate(standbys)
        ] if handover else [],
    )  # fmt: skip
