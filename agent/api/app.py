"""The agent's HTTP API: the full one for loopback, and the read-only one that may face the network.

Every answer is a model from agent/schema.py. Every error is a JSON `Problem`
with a 4xx status: malformed input never produces a 500 or a traceback.
Mutating requests need the bearer token and name the operator in
`X-Hadeck-Actor`; both go into the audit record.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import shlex
import time
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent import __version__, config
from agent.actions import Actions, Refused
from agent.api.operations import router as operations_router
from agent.audit import AuditLog
from agent.config import AgentConfig
from agent.failover.lease import LeaseStoreError
from agent.failover.member import GroupMember
from agent.failover.operations import GroupOperations, handover_record
from agent.failover.operations import status as group_status
from agent.metrics import Metrics
from agent.operations import Operations
from agent.schema import (
    ActionRequest,
    ActionResult,
    AuditRecord,
    Event,
    GroupActionRequest,
    GroupActionResult,
    GroupStatus,
    HandoverRecord,
    HostStatus,
    ProbeStatus,
    Problem,
    Resources,
    Runbook,
    ServiceStatus,
)
from agent.store import EventRow, Store
from agent.supervisor import Supervisor

#: SQLite's largest integer: a bigger cursor is a client's mistake (422), not a crash (500).
MAX_ID = 2**63 - 1
ACTOR = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
NAME = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]


class AgentView(Protocol):
    """What the API reads of the running agent; the supervisor changes on reload."""

    token: str
    started_at: float
    config_loaded_at: float

    @property
    def config(self) -> AgentConfig: ...
    @property
    def supervisor(self) -> Supervisor: ...
    @property
    def actions(self) -> Actions: ...
    @property
    def store(self) -> Store: ...
    @property
    def audit(self) -> AuditLog: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def resources(self) -> Resources: ...
    @property
    def groups(self) -> dict[str, GroupMember]: ...
    @property
    def group_ops(self) -> GroupOperations: ...
    @property
    def operations(self) -> Operations: ...


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem},
    401: {"model": Problem},
    404: {"model": Problem},
    409: {"model": Problem},
    422: {"model": Problem},
}


def _problem(
    status: int, message: str, detail: Any = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        Problem(error=message, detail=detail).model_dump(), status_code=status, headers=headers
    )


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _problem(exc.status, exc.message)

    @app.exception_handler(Refused)
    async def _refused(_: Request, exc: Refused) -> JSONResponse:
        return _problem(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{p['where']}: {p['problem']}" for p in problems[:5])
        return _problem(422, f"invalid request: {summary}", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        # Keep the framework's headers (Allow on 405, WWW-Authenticate).
        return _problem(exc.status_code, str(exc.detail), headers=exc.headers)


def operator(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_hadeck_actor: Annotated[str | None, Header()] = None,
) -> str:
    """Checks the bearer token; returns the operator's name for the audit log."""
    token: str = request.app.state.agent.token
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), token.encode()
    ):
        raise ApiError(401, "missing or wrong bearer token (see the agent's token file)")
    actor = x_hadeck_actor or "api"
    if not ACTOR.match(actor):
        raise ApiError(400, "X-Hadeck-Actor must be 1-64 of letters, digits and _.@+-")
    return actor


Operator = Annotated[str, Depends(operator)]


def event_model(row: EventRow) -> Event:
    return Event(
        id=row.id,
        ts=row.ts,
        kind=row.kind,
        severity=row.severity,
        service=row.service,
        probe=row.probe,
        message=row.message,
        evidence=row.evidence,
    )


def probe_target(cfg: config.ProbeConfig) -> str:
    """One line an operator recognises; never the headers, which may carry credentials."""
    match cfg:
        case config.HttpProbe():
            url = urlsplit(cfg.url)
            if url.username or url.password:  # credentials in the URL stay on the host
                url = url._replace(netloc=url.netloc.rpartition("@")[2])
            return f"{cfg.method} {urlunsplit(url)}"
        case config.TcpProbe():
            return f"{cfg.host}:{cfg.port}"
        case config.CommandProbe():
            return shlex.join(cfg.command)
        case config.ProcessProbe():
            return f"pidfile {cfg.pidfile}" if cfg.pidfile else f"process {cfg.name}"
        case config.DiskProbe() | config.FileAgeProbe():
            return str(cfg.path)
        case config.SystemdProbe():
            return f"unit {cfg.unit}"
    return cfg.kind


def probe_status(agent: AgentView, recent_results: int = 20) -> list[ProbeStatus]:
    out = []
    for name, r in agent.supervisor.probes.items():
        d = r.detector
        recent = r.recent(recent_results) if recent_results else r.recent(1)
        out.append(
            ProbeStatus(
                name=name,
                kind=r.cfg.kind,
                target=probe_target(r.cfg),
                state=d.state.value,
                since=d.since,
                flapping=d.flapping,
                interval_seconds=r.cfg.interval,
                fall=r.cfg.fall,
                rise=r.cfg.rise,
                consecutive_failures=d.failures,
                consecutive_successes=d.successes,
                services=list(r.services),
                last=recent[-1] if recent else None,
                recent=recent if recent_results else [],
            )
        )
    return out


def service_status(agent: AgentView) -> list[ServiceStatus]:
    return [
        ServiceStatus(
            name=name,
            state=s.state.value,
            since=s.since,
            flapping=s.flapping,
            probes=list(s.cfg.probes),
            depends_on=list(s.cfg.depends_on),
            restartable=s.cfg.restart is not None,
            restart_command=list(s.cfg.restart.command) if s.cfg.restart is not None else None,
            recovery=s.ladder.status() if s.ladder is not None else None,
        )
        for name, s in agent.supervisor.services.items()
    ]


def runbook_list(agent: AgentView) -> list[Runbook]:
    return [
        Runbook(name=n, description=b.description, steps=[list(s.command) for s in b.steps])
        for n, b in agent.supervisor.config.runbooks.items()
    ]


def _add_routing_routes(app: FastAPI, agent: AgentView) -> None:
    """What HAProxy and other routers check: 200 only where the answer is yes, right now."""

    def answer(group: str, yes: bool) -> JSONResponse:
        m = agent.groups.get(group)
        if m is None:
            return _problem(404, f"no group {group!r} on this host")
        body = {
            "group": group,
            "member": m.member,
            "role": m.role.value,
            "token": m.lease.token if m.lease else None,
            "healthy": m.health().up,
        }
        return JSONResponse(body, status_code=200 if yes else 503)

    @app.get("/groups/{group}/primary", tags=["routing"], responses={503: {}})
    async def primary(group: NAME) -> JSONResponse:
        """200 only on the member that holds the group's lease, is promoted and healthy."""
        m = agent.groups.get(group)
        return answer(group, m is not None and m.is_primary())

    @app.get("/groups/{group}/replica", tags=["routing"], responses={503: {}})
    async def replica(group: NAME) -> JSONResponse:
        """200 on a healthy standby."""
        m = agent.groups.get(group)
        return answer(group, m is not None and m.is_replica())


def _add_read_only_routes(app: FastAPI, agent: AgentView) -> None:
    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the agent's event loop answers."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics() -> Response:
        return Response(agent.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def build_public(agent: AgentView) -> FastAPI:
    """The listener that may face the network: health, metrics (and routing endpoints later)."""
    app = FastAPI(
        title="hadeck-agent (public, read-only)",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    _install_errors(app)
    _add_read_only_routes(app, agent)
    _add_routing_routes(app, agent)
    return app


def build_api(agent: AgentView) -> FastAPI:
    app = FastAPI(
        title="hadeck-agent", version=__version__, docs_url=None, redoc_url=None, responses=ERRORS
    )
    app.state.agent = agent
    _install_errors(app)
    _add_read_only_routes(app, agent)
    _add_routing_routes(app, agent)
    _add_group_routes(app, agent)
    app.include_router(
        operations_router(agent, Operator, lambda message: ApiError(404, message)),
        responses=ERRORS,
    )

    @app.get("/api/v1/status", response_model=HostStatus)
    async def status(
        recent: Annotated[
            int,
            Query(
                ge=0,
                le=50,
                description="Recent results per probe (sparklines); 0 for a slim fleet poll.",
            ),
        ] = 20,
    ) -> HostStatus:
        now = time.time()
        services = service_status(agent)
        probes = probe_status(agent, recent)
        problems = agent.store.events(limit=10, min_severity="warning")
        return HostStatus(
            host=agent.config.agent.name,
            version=__version__,
            started_at=agent.started_at,
            uptime_seconds=round(now - agent.started_at, 3),
            now=now,
            config_loaded_at=agent.config_loaded_at,
            summary={
                "services_up": sum(s.state == "up" for s in services),
                "services_down": sum(s.state == "down" for s in services),
                "probes_failing": sum(p.state == "down" for p in probes),
                "flapping": sum(p.flapping for p in probes),
                "gave_up": sum(
                    s.recovery is not None and s.recovery.state == "gave_up" for s in services
                ),
            },
            services=services,
            probes=probes,
            resources=agent.resources,
            problems=[event_model(e) for e in problems],
            runbooks=runbook_list(agent),
            groups=[group_status(m, _store_name(agent)) for m in agent.groups.values()],
        )

    @app.get("/api/v1/probes", response_model=list[ProbeStatus])
    async def probes() -> list[ProbeStatus]:
        return probe_status(agent)

    @app.get("/api/v1/services", response_model=list[ServiceStatus])
    async def services() -> list[ServiceStatus]:
        return service_status(agent)

    @app.get("/api/v1/runbooks", response_model=list[Runbook])
    async def runbooks() -> list[Runbook]:
        return runbook_list(agent)

    @app.get("/api/v1/events", response_model=list[Event])
    async def events(
        since: Annotated[
            int, Query(ge=0, le=MAX_ID, description="Return events with id > since.")
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
        severity: Literal["info", "warning", "critical"] | None = None,
    ) -> list[Event]:
        """Events after the id `since` (oldest first), or the newest `limit` when since=0."""
        return [event_model(e) for e in agent.store.events(since, limit, severity)]

    @app.get("/api/v1/audit", response_model=list[AuditRecord])
    async def audit(
        since: Annotated[
            int, Query(ge=0, le=MAX_ID, description="Return records with seq > since.")
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[AuditRecord]:
        records = await asyncio.to_thread(agent.audit.tail, since, limit)  # file I/O
        return [AuditRecord.model_validate(r) for r in records]

    @app.post("/api/v1/probes/{name}/run", response_model=ActionResult)
    async def run_probe(
        name: NAME, actor: Operator, body: ActionRequest | None = None
    ) -> ActionResult:
        """Run a probe now; its result feeds the detector like a scheduled one."""
        return await agent.actions.run_probe(name, actor, body.reason if body else "")

    @app.post("/api/v1/services/{name}/restart", response_model=ActionResult)
    async def restart(
        name: NAME, actor: Operator, body: ActionRequest | None = None
    ) -> ActionResult:
        """Run the service's configured restart command (refused while one already runs)."""
        return await agent.actions.restart(name, actor, body.reason if body else "")

    @app.post("/api/v1/runbooks/{name}/run", response_model=ActionResult)
    async def run_runbook(
        name: NAME, actor: Operator, body: ActionRequest | None = None
    ) -> ActionResult:
        """Run a named runbook's steps in order, stopping at the first failure."""
        return await agent.actions.run_runbook(name, actor, body.reason if body else "")

    return app


def _store_name(agent: AgentView) -> str:
    ls = agent.config.lease_store
    return f"etcd {','.join(ls.endpoints)}" if ls.kind == "etcd" else f"sqlite {ls.path or ''}"


def _add_group_routes(app: FastAPI, agent: AgentView) -> None:
    def store_name() -> str:
        return _store_name(agent)

    def member(group: str) -> GroupMember:
        m = agent.groups.get(group)
        if m is None:
            raise ApiError(404, f"no group {group!r} on this host")
        return m

    @app.get("/api/v1/groups", response_model=list[GroupStatus], tags=["groups"])
    async def groups() -> list[GroupStatus]:
        return [group_status(m, store_name()) for m in agent.groups.values()]

    @app.get("/api/v1/groups/{group}", response_model=GroupStatus, tags=["groups"])
    async def group(group: NAME) -> GroupStatus:
        return group_status(member(group), store_name())

    @app.get("/api/v1/groups/{group}/history", response_model=list[HandoverRecord], tags=["groups"])
    async def history(
        group: NAME, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> list[HandoverRecord]:
        """Handovers, newest first: when, from, to, why, who, and how long each step took."""
        m = member(group)
        try:
            entries = await m.store.history(group, limit)
        except LeaseStoreError as exc:
            raise ApiError(409, f"the lease store does not answer: {exc}") from None
        return [handover_record(e) for e in entries]

    @app.post(
        "/api/v1/groups/{group}/switchover", response_model=GroupActionResult, tags=["groups"]
    )
    async def switchover(
        group: NAME, actor: Operator, body: GroupActionRequest | None = None
    ) -> GroupActionResult:
        """Planned handover from the healthy primary to `to` (default: the best standby)."""
        b = body or GroupActionRequest()
        return await agent.group_ops.switchover(group, b.to, actor, b.reason)

    @app.post("/api/v1/groups/{group}/failover", response_model=GroupActionResult, tags=["groups"])
    async def failover(
        group: NAME, actor: Operator, body: GroupActionRequest | None = None
    ) -> GroupActionResult:
        """Forced promotion of `to` (default: this member) when no healthy primary exists;
        `confirm` must be the group's name. Data not yet replicated to `to` may be lost."""
        b = body or GroupActionRequest()
        return await agent.group_ops.failover(group, b.to, b.confirm, actor, b.reason)

    @app.post("/api/v1/groups/{group}/pause", response_model=GroupActionResult, tags=["groups"])
    async def pause(
        group: NAME, actor: Operator, body: GroupActionRequest | None = None
    ) -> GroupActionResult:
        """Maintenance: no automatic failover or promotion; state is still reported."""
        b = body or GroupActionRequest()
        return await agent.group_ops.set_paused(group, True, actor, b.reason)

    @app.post("/api/v1/groups/{group}/resume", response_model=GroupActionResult, tags=["groups"])
    async def resume(
        group: NAME, actor: Operator, body: GroupActionRequest | None = None
    ) -> GroupActionResult:
        b = body or GroupActionRequest()
        return await agent.group_ops.set_paused(group, False, actor, b.reason)
