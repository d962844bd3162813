"""Operator actions (restart a service, run a probe now, run a runbook), each audited.

Requests only choose among what the config defines; they never supply a
command. A refused action (unknown target, already running, dependency down)
is audited too, so the log shows every attempt, not only the ones that ran.
"""

from __future__ import annotations

import time
from typing import Any

from agent.api.errors import ApiError
from agent.audit import AuditLog
from agent.commands import CommandResult
from agent.detector import State
from agent.events import EventLog
from agent.metrics import Metrics
from agent.probes.runner import wire
from agent.runbooks import run_steps
from agent.schema import ActionResult, StepOutcome
from agent.store import Store
from agent.supervisor import Supervisor


class Refused(ApiError):
    """The action cannot run; `status` is the HTTP status that says why."""


def _outcomes(results: list[CommandResult]) -> list[StepOutcome]:
    return [
        StepOutcome(
            argv=list(r.argv),
            exit_code=r.exit_code,
            timed_out=r.timed_out,
            duration_seconds=round(r.duration, 3),
            output=r.output[-4000:],
        )
        for r in results
    ]


class Actions:
    def __init__(
        self,
        supervisor: Supervisor,
        events: EventLog,
        store: Store,
        metrics: Metrics,
        audit: AuditLog,
    ) -> None:
        self.supervisor, self.events, self.store = supervisor, events, store
        self.metrics, self.audit = metrics, audit

    def _refuse(
        self,
        actor: str,
        action: str,
        target: str,
        params: dict[str, Any],
        status: int,
        message: str,
    ) -> Refused:
        self.audit.append(actor, action, target, params, {"ok": False, "refused": message})
        self.metrics.actions.labels(action, "refused").inc()
        return Refused(status, message)

    def _finish(
        self,
        actor: str,
        action: str,
        target: str,
        params: dict[str, Any],
        started: float,
        ok: bool,
        message: str,
        **extra: Any,
    ) -> ActionResult:
        duration = time.time() - started
        steps: list[StepOutcome] = extra.get("steps", [])
        record = self.audit.append(
            actor,
            action,
            target,
            params,
            {
                "ok": ok,
                "message": message,
                "duration_seconds": round(duration, 3),
                "commands": [
                    {"argv": s.argv, "exit_code": s.exit_code, "timed_out": s.timed_out}
                    for s in steps
                ],
            },
        )
        self.store.add_action(started, actor, action, target, ok, message, duration)
        self.metrics.actions.labels(action, "ok" if ok else "failed").inc()
        self.events.emit(
            f"action_{action}",
            "info" if ok else "warning",
            f"{actor}: {action} {target}: {message}",
            service=target if action == "restart" else None,
            probe=target if action == "run_probe" else None,
            evidence={"actor": actor, "params": params, "audit_seq": record["seq"]},
        )
        return ActionResult(
            ok=ok,
            action=action,
            target=target,
            actor=actor,
            started_at=started,
            duration_seconds=round(duration, 3),
            message=message,
            audit_seq=record["seq"],
            **extra,
        )

    async def restart(self, service: str, actor: str, reason: str) -> ActionResult:
        params = {"reason": reason}
        svc = self.supervisor.services.get(service)
        if svc is None:
            raise self._refuse(actor, "restart", service, params, 404, f"no service {service!r}")
        if svc.cfg.restart is None:
            raise self._refuse(
                actor,
                "restart",
                service,
                params,
                409,
                f"service {service!r} has no restart command in the config",
            )
        if svc.lock.locked():
            raise self._refuse(
                actor,
                "restart",
                service,
                params,
                409,
                f"a restart or runbook of {service!r} is already running",
            )
        down = [d for d in svc.cfg.depends_on if self.supervisor.services[d].state is State.DOWN]
        if down:
            raise self._refuse(
                actor,
                "restart",
                service,
                params,
                409,
                f"{service!r} depends on {', '.join(down)}, which is down",
            )
        started = time.time()
        results = await self.supervisor.run_step(svc, "restart")
        ok = all(r.ok for r in results)
        return self._finish(
            actor,
            "restart",
            service,
            params,
            started,
            ok,
            results[-1].summary(),
            steps=_outcomes(results),
        )

    async def run_probe(self, probe: str, actor: str, reason: str) -> ActionResult:
        params = {"reason": reason}
        runner = self.supervisor.probes.get(probe)
        if runner is None:
            raise self._refuse(actor, "run_probe", probe, params, 404, f"no probe {probe!r}")
        started = time.time()
        sample = await runner.run()
        return self._finish(
            actor,
            "run_probe",
            probe,
            params,
            started,
            sample.ok,
            f"{'ok' if sample.ok else 'failed'}: {sample.detail}; state {runner.state.value}",
            probe=wire(sample),
        )

    async def run_runbook(self, name: str, actor: str, reason: str) -> ActionResult:
        params = {"reason": reason}
        book = self.supervisor.config.runbooks.get(name)
        if book is None:
            raise self._refuse(actor, "runbook", name, params, 404, f"no runbook {name!r}")
        started = time.time()
        results = await run_steps(book.steps)
        ok = all(r.ok for r in results) and len(results) == len(book.steps)
        done = f"{len(results)} of {len(book.steps)} steps ran"
        message = f"{done}; " + (results[-1].summary() if results else "no steps")
        return self._finish(
            actor, "runbook", name, params, started, ok, message, steps=_outcomes(results)
        )
