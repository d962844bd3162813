"""Action plans: what an operator is about to do, spelled out before it is done.

Every action in the console (restart, run a probe, run a runbook, and later
failover, rollback, restore, silence) is built as a `Plan` first. The
confirmation dialog shows the plan verbatim: the host, the exact commands the
agent will run, and what can go wrong. Only a confirmed plan is executed, and
its result comes back as an `Outcome`. No Textual here, so the plans are
unit-tested and a future CLI can reuse them.
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
import socket
from dataclasses import dataclass, field

from agent.schema import ActionResult, ProbeStatus, Runbook, ServiceStatus
from console.agent_client import AgentClient, AgentRefused
from console.transport import TransportError

_ACTOR_CHARS = re.compile(r"[^A-Za-z0-9_.@+-]")


def operator_identity() -> str:
    """`alice@bastion-1`: the login name behind the console (sudo's caller if any)."""
    user = os.environ.get("SUDO_USER") or getpass.getuser()
    host = socket.gethostname().split(".")[0]
    return _ACTOR_CHARS.sub("_", f"{user}@{host}")[:64]


@dataclass(frozen=True)
class Plan:
    host: str
    action: str
    target: str
    #: The agent endpoint that carries it out.
    path: str
    #: What will run, one line each, exactly as the agent will run it.
    runs: list[str]
    #: What the operator should know before confirming (dependencies, lost data...).
    warnings: list[str] = field(default_factory=list)
    #: A forced, dangerous action asks the operator to type this word.
    type_to_confirm: str | None = None
    timeout: float = 120.0

    @property
    def title(self) -> str:
        return f"{self.action} {self.target} on {self.host}"


@dataclass(frozen=True)
class Outcome:
    plan: Plan
    ok: bool
    message: str
    result: ActionResult | None = None


def restart(host: str, svc: ServiceStatus) -> Plan:
    if not svc.restartable or svc.restart_command is None:
        raise ValueError(f"service {svc.name} on {host} has no restart command in its config")
    warnings = []
    if svc.state == "up":
        warnings.append(f"{svc.name} is up: restarting it interrupts a working service")
    if svc.recovery is not None and svc.recovery.state not in ("idle", "gave_up"):
        warnings.append(f"automatic recovery is {svc.recovery.state}: {svc.recovery.reason}")
    return Plan(
        host,
        "restart",
        svc.name,
        f"/api/v1/services/{svc.name}/restart",
        [shlex.join(svc.restart_command)],
        warnings,
    )


def run_probe(host: str, probe: ProbeStatus) -> Plan:
    return Plan(
        host,
        "run probe",
        probe.name,
        f"/api/v1/probes/{probe.name}/run",
        [f"{probe.kind} probe: {probe.target}"],
        timeout=30.0,
    )


def run_runbook(host: str, book: Runbook) -> Plan:
    return Plan(
        host,
        "run runbook",
        book.name,
        f"/api/v1/runbooks/{book.name}/run",
        [shlex.join(step) for step in book.steps],
        [book.description] if book.description else [],
        timeout=600.0,
    )


def execute(client: AgentClient, plan: Plan, actor: str, reason: str = "") -> Outcome:
    """Blocking: run in a worker. Every failure becomes an Outcome, never an exception."""
    try:
        result = client.act(plan.path, actor, reason, plan.timeout)
    except AgentRefused as exc:
        return Outcome(plan, False, f"{plan.host} refused: {exc}")
    except TransportError as exc:
        return Outcome(plan, False, f"{plan.host} unreachable: {exc}")
    return Outcome(plan, result.ok, result.message, result)
