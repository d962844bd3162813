"""Operator actions (restart a service, run a probe now, run a runbook), each audited.

Requests only choose among what the config defines; they never supply a
command. A refused action (unknown target, already running, dependency down)
is journaled too (agent/journal.py), so the log shows every attempt, not only the
ones that ran. An answer says when the action's audit record is not on disk.

Each action's checks are one function that answers a Plan; `dry_run` returns
it, the real request refuses with its reason or runs what it lists.
"""

from __future__ import annotations

import shlex
import time
from typing import Any

from agent.api.errors import ApiError
from agent.commands import CommandResult
from agent.detector import State
from agent.journal import Event, Journal
from agent.probes.runner import wire
from agent.runbooks import run_steps
from agent.schema import ActionResult, Plan, StepOutcome
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

    def restart_plan(self, service: str) -> Plan:
        svc = self.supervisor.services.get(service)
        if svc is None:
            return Plan.refused("restart", service, 404, f"no service {service!r}")
        if svc.cfg.restart is None:
            msg = f"service {service!r} has no restart command in the config"
            return Plan.refused("restart", service, 409, msg)
        steps = [shlex.join(svc.cfg.restart.command) + f"  (timeout {svc.cfg.restart.timeout:g}s)"]
        problem = None
        down = [d for d in svc.cfg.depends_on if self.supervisor.services[d].state is State.DOWN]
        if svc.lock.locked():
            problem = f"a restart or runbook of {service!r} is already running"
        elif down:
            problem = f"{service!r} depends on {', '.join(down)}, which is down"
        warnings = []
        if svc.state is State.UP:
            warnings.append(f"{service} is up: restarting it interrupts a working service")
        if svc.ladder is not None and (r := svc.ladder.status()).state not in ("idle", "gave_up"):
            warnings.append(f"automatic recovery is {r.state}: {r.reason}")
        return Plan(
            action="restart",
            target=service,
            ok=problem is None,
            refusal=problem,
            status=200 if problem is None else 409,
            steps=steps,
            warnings=warnings,
        )

    async def restart(self, service: str, actor: str, reason: str) -> ActionResult:
        params = {"reason": reason}
        plan = self.restart_plan(service)
        if not plan.ok:
            raise await self._refuse(
                actor, "restart", service, params, plan.status, plan.refusal or "refused"
            )
        svc = self.supervisor.services[service]
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

    def probe_plan(self, probe: str) -> Plan:
        runner = self.supervisor.probes.get(probe)
        if runner is None:
            return Plan.refused("run_probe", probe, 404, f"no probe {probe!r}")
        return Plan(
            action="run_probe",
            target=probe,
            ok=True,
            refusal=None,
            status=200,
            steps=[f"run the {runner.cfg.kind} probe {probe} once; its result counts as any other"],
        )

    def runbook_plan(self, name: str) -> Plan:
        book = self.supervisor.config.runbooks.get(name)
        if book is None:
            return Plan.refused("runbook", name, 404, f"no runbook {name!r}")
        return Plan(
            action="runbook",
            target=name,
            ok=True,
            refusal=None,
            status=200,
            steps=[f"{shlex.join(s.command)}  (timeout {s.timeout:g}s)" for s in book.steps],
            warnings=[book.description] if book.description else [],
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
