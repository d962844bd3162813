"""Liveness and metrics: on both listeners, for Prometheus and load balancers."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from agent.api.base import AgentView


def router(agent: AgentView) -> APIRouter:
    r = APIRouter()

    @r.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the agent's event loop answers."""
        return {"status": "ok"}

    @r.get("/metrics", tags=["health"], response_class=Response)
    async def metrics() -> Response:
        return Response(agent.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return r
