"""Operator actions (restart a service, run a probe now, run a runbook), each audited.

Requests only choose among what the config defines; they never supply a
command. A refused action (unknown target, already running, dependency down)
is journaled too (agent/journal.py), so the log shows every attempt, not only the
ones that ran. An answer says when the action's audit record is not on disk.
"""

from __future__ import annotations

import time
from typing import Any

from agent.api.errors import ApiError
from agent.commands import CommandResult
from agent.detector import State
from agent.journal import Event, Journal
from agent.probes.runner import wire
from agent.runbooks import run_steps
from agent.schema import ActionResult, StepOutcome
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
    def __init__(self, supervisor: Supervisor, journal: Journal) -> None:
        self.supervisor, self.journal = supervisor, journal

    async def _refuse(
        self,
        actor: str,
        action: str,
        target: str,
        params: dict[str, Any],
        status: int,
        message: str,
    ) -> Refused:
        entry = await self.journal.refused(actor, action, target, params, message)
        return Refused(status, "; ".join(filter(None, [message, entry.note()])))

    async def _finish(
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
        entry = await self.journal.finished(
            actor,
            action,
            target,
            params,
            ok=ok,
            message=message,
            started=started,
            duration=duration,
            result={
                "message": message,
                "duration_seconds": round(duration, 3),
                "commands": [
                    {"argv": s.argv, "exit_code": s.exit_code, "timed_out": s.timed_out}
                    for s in steps
                ],
            },
            event=Event(
                f"action_{action}",
                "info" if ok else "warning",
                f"{actor}: {action} {target}: {message}",
                service=target if action == "restart" else None,
                probe=target if action == "run_probe" else None,
                evidence={"actor": actor, "params": params},
            ),
        )
        return ActionResult(
            ok=ok,
            action=action,
            target=target,
            actor=actor,
            started_at=started,
            duration_seconds=round(duration, 3),
            message="; ".join(filter(None, [message, entry.note()])),
            audit_seq=entry.seq,
            audit_error=entry.error,
            **extra,
        )

    async def restart(self, service: str, actor: str, reason: str) -> ActionResult:
        params = {"reason": reason}
        svc = self.supervisor.services.get(service)
        if svc is None:
            raise await self._refuse(
                actor, "restart", service, params, 404, f"no service {service!r}"
            )
        if svc.cfg.restart is None:
            raise await self._refuse(
                actor,
                "restart",
                service,
                params,
                409,
                f"service {service!r} has no restart command in the config",
            )
        if svc.lock.locked():
            raise await self._refuse(
                actor,
                "restart",
                service,
                params,
                409,
                f"a restart or runbook of {service!r} is already running",
            )
        down = [d for d in svc.cfg.depends_on if self.supervisor.services[d].state is State.DOWN]
        if down:
            raise await self._refuse(
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
        return await self._finish(
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
            raise await self._refuse(actor, "run_probe", probe, params, 404, f"no probe {probe!r}")
        started = time.time()
        sample = await runner.run()
        return await self._finish(
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
            raise await self._refuse(actor, "runbook", name, params, 404, f"no runbook {name!r}")
        started = time.time()
        results = await run_steps(book.steps)
        ok = all(r.ok for r in results) and len(results) == len(book.steps)
        done = f"{len(results)} of {len(book.steps)} steps ran"
        message = f"{done}; " + (results[-1].summary() if results else "no steps")
        return await self._finish(
            actor, "runbook", name, params, started, ok, message, steps=_outcomes(results)
        )
