"""The runbooks the config names, and running one."""

from __future__ import annotations

from fastapi import APIRouter

from agent.api.auth import Operator
from agent.api.base import NAME, SupervisionView
from agent.schema import ActionRequest, ActionResult, Plan, Runbook


def runbook_list(agent: SupervisionView) -> list[Runbook]:
    return [
        Runbook(name=n, description=b.description, steps=[list(s.command) for s in b.steps])
        for n, b in agent.supervisor.config.runbooks.items()
    ]


def router(agent: SupervisionView) -> APIRouter:
    r = APIRouter()

    @r.get("/api/v1/runbooks", response_model=list[Runbook])
    async def runbooks() -> list[Runbook]:
        return runbook_list(agent)

    @r.post("/api/v1/runbooks/{name}/run", response_model=ActionResult | Plan)
    async def run_runbook(
        name: NAME, actor: Operator, body: ActionRequest | None = None
    ) -> ActionResult | Plan:
        """Run a named runbook's steps in order, stopping at the first failure."""
        if body is not None and body.dry_run:
            return agent.actions.runbook_plan(name)
        return await agent.actions.run_runbook(name, actor, body.reason if body else "")

    return r
