"""The probes: their state and recent results, and running one now."""

from __future__ import annotations

import shlex
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter

from agent import config
from agent.api.auth import Operator
from agent.api.base import NAME, SupervisionView
from agent.schema import ActionRequest, ActionResult, Plan, ProbeStatus


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


def probe_status(agent: SupervisionView, recent_results: int = 20) -> list[ProbeStatus]:
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


def router(agent: SupervisionView) -> APIRouter:
    r = APIRouter()

    @r.get("/api/v1/probes", response_model=list[ProbeStatus])
    async def probes() -> list[ProbeStatus]:
        return probe_status(agent)

    @r.post("/api/v1/probes/{name}/run", response_model=ActionResult | Plan)
    async def run_probe(
        name: NAME, actor: Operator, body: ActionRequest | None = None
    ) -> ActionResult | Plan:
        """Run a probe now; its result feeds the detector like a scheduled one."""
        if body is not None and body.dry_run:
            return agent.actions.probe_plan(name)
        return await agent.actions.run_probe(name, actor, body.reason if body else "")

    return r
