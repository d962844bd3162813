"""The agent's HTTP API: the full one for loopback, and the read-only one that may face the network.

Each app is assembled from routers, one per domain; a capability contributes its own
(HA groups: agent/failover/api.py). `/healthz` and `/metrics` are on both. Every answer
is a model from agent/schema.py. Every error is a JSON `Problem`: 4xx for what the
caller can fix, 500 (without a traceback) for the agent's own bugs (agent/api/problems.py).
Mutating requests need the bearer token, checked before any body is read, and name the
operator in `X-Hadeck-Actor`; both go into the audit record. Neither app redirects (a
redirect to `/metrics` from `/metrics/` was built from the `Host` header).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI

from agent import __version__
from agent.api import audit, events, health, operations, probes, runbooks, services, status
from agent.api.base import AgentView, SupervisionView
from agent.api.gate import RequestGate
from agent.api.problems import ERRORS, CatchAll, install_errors


def core_routers(agent: AgentView) -> list[APIRouter]:
    """The core's routes beyond health and metrics (status, events, audit, operations);
    each subsystem adds its own (Subsystem.routers), and one not configured adds none."""
    return [
        status.router(agent),
        events.router(agent),
        audit.router(agent),
        operations.router(agent),
    ]


def every_router(agent: Any) -> list[APIRouter]:
    """Every route any agent can have, HA groups' included: the API's whole document
    (OpenAPI, the fuzz test) and tests that build an app without a daemon."""
    from agent.failover.api import group_router, routing_router

    return [
        routing_router(agent),
        group_router(agent),
        *core_routers(agent),
        *supervision_routers(agent),
    ]


def supervision_routers(supervision: SupervisionView) -> list[APIRouter]:
    """The supervision subsystem's routes (Supervision.routers)."""
    return [probes.router(supervision), services.router(supervision), runbooks.router(supervision)]


def every_public_router(agent: Any) -> list[APIRouter]:
    from agent.failover.api import failsafe_router, routing_router

    return [routing_router(agent), failsafe_router(agent)]


def _assemble(
    app: FastAPI,
    agent: AgentView,
    token: Callable[[], str] | None,
    routers: Sequence[APIRouter],
) -> FastAPI:
    app.state.agent = agent
    install_errors(app)
    app.add_middleware(RequestGate, token=token)
    app.add_middleware(CatchAll, events=lambda: agent.events)  # added last: outermost
    app.include_router(health.router(agent))
    for router in routers:
        app.include_router(router)
    return app


def build_public(agent: AgentView, routers: Sequence[APIRouter] | None = None) -> FastAPI:
    """The listener that may face the network: health, metrics and `routers`, which must
    be read-only (default: the HA groups' routing endpoints) but for the failsafe
    heartbeat, which takes no body and checks the group's secret. No OpenAPI document."""
    app = FastAPI(
        title="hadeck-agent (public, read-only)",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,
    )
    # No token: nothing here takes one, and a mutating request's 404 or 405 comes
    # before its body is read (the gate still limits and closes).
    public = every_public_router(agent) if routers is None else routers
    return _assemble(app, agent, None, public)


def build_api(agent: AgentView, routers: Sequence[APIRouter] | None = None) -> FastAPI:
    """The full API, for loopback: health, metrics and `routers` (default: every route)."""
    app = FastAPI(
        title="hadeck-agent",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        responses=ERRORS,
        redirect_slashes=False,
    )
    full = every_router(agent) if routers is None else routers
    return _assemble(app, agent, lambda: agent.token, full)
