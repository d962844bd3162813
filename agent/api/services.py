"""The services: their state and recovery, and restarting one."""

from __future__ import annotations

from fastapi import APIRouter

from agent.api.auth import Operator
from agent.api.base import NAME, SupervisionView
from agent.schema import ActionRequest, ActionResult, Plan, ServiceStatus


def service_status(agent: SupervisionView) -> list[ServiceStatus]:
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


def router(agent: SupervisionView) -> APIRouter:
    r = APIRouter()

    @r.get("/api/v1/services", response_model=list[ServiceStatus])
    async def services() -> list[ServiceStatus]:
        return service_status(agent)

    @r.post("/api/v1/services/{name}/restart", response_model=ActionResult | Plan)
    async def restart(
        name: NAME, actor: Operator, body: ActionRequest | None = None
    ) -> ActionResult | Plan:
        """Run the service's configured restart command (refused while one already runs)."""
        if body is not None and body.dry_run:
            return agent.actions.restart_plan(name)
        return await agent.actions.restart(name, actor, body.reason if body else "")

    return r
