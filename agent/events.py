"""The one path every event takes: store, metrics, log. Subsystems call `emit`, nothing else."""

from __future__ import annotations

import logging
import time
from typing import Any

from agent.metrics import Metrics
from agent.store import EventRow, Store

log = logging.getLogger("hadeck.events")

_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


class EventLog:
    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics

    def emit(
        self,
        kind: str,
        severity: str,
        message: str,
        *,
        service: str | None = None,
        probe: str | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> EventRow:
        ts = time.time()
        evidence = evidence or {}
        event_id = self.store.add_event(ts, kind, severity, message, service, probe, evidence)
        self.metrics.events.labels(kind, severity).inc()
        log.log(_LEVEL[severity], "%s: %s", kind, message)
        return EventRow(event_id, ts, kind, severity, service, probe, message, evidence)
