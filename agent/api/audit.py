"""The audit log, read from its end."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from agent.api.base import MAX_ID, AgentView
from agent.schema import AuditRecord


def router(agent: AgentView) -> APIRouter:
    r = APIRouter()

    @r.get("/api/v1/audit", response_model=list[AuditRecord])
    async def audit(
        since: Annotated[
            int, Query(ge=0, le=MAX_ID, description="Return records with seq > since.")
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[AuditRecord]:
        records = await asyncio.to_thread(agent.audit.tail, since, limit)  # file I/O
        return [AuditRecord.model_validate(r) for r in records]

    return r
