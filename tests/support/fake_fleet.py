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


def host_status(name: str, *, down: bool = False, cpu: float = 0.1, seed: int = 0) -> HostStatus:
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
    )


class FakeTransport(Transport):
    """Answers like an agent would, from a HostStatus; records every POST."""

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
        status = host_status(name, down=i in down, cpu=0.05 * (i + 1), seed=i)
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
