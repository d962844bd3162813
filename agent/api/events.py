"""The event log, read with a cursor."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from agent.api.base import MAX_ID, AgentView
from agent.schema import Event
from agent.store import EventRow


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


def router(agent: AgentView) -> APIRouter:
    r = APIRouter()

    @r.get("/api/v1/events", response_model=list[Event])
    async def events(
        since: Annotated[
            int, Query(ge=0, le=MAX_ID, description="Return events with id > since.")
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
        severity: Literal["info", "warning", "critical"] | None = None,
    ) -> list[Event]:
        """Events after the id `since` (oldest first), or the newest `limit` when since=0."""
        return [event_model(e) for e in agent.store.events(since, limit, severity)]

    return r
