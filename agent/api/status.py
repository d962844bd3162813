"""The host summary the console shows: services, probes, resources, problems, groups."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query

from agent import __version__
from agent.api.base import AgentView
from agent.api.events import event_model
from agent.api.probes import probe_status
from agent.api.runbooks import runbook_list
from agent.api.services import service_status
from agent.schema import GroupStatus, HostStatus


def router(agent: AgentView) -> APIRouter:
    r = APIRouter()

    @r.get("/api/v1/status", response_model=HostStatus)
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
            groups=_groups(agent),
        )

    return r


def _groups(agent: AgentView) -> list[GroupStatus]:
    """Only a host with groups has imported the HA groups' code."""
    if not agent.groups:
        return []
    from agent.failover.api import store_name
    from agent.failover.operations import status

    return [status(m, store_name(agent.config)) for m in agent.groups.values()]
