"""Action plans: what an operator is about to do, spelled out before it is done.

Every action in the console (restart, run a probe, run a runbook, an HA group's
switchover, failover, pause and resume, draining a member in HAProxy, and later
rollback, restore, silence) is built as a `Plan` first. The confirmation dialog
shows the plan verbatim: the host, the endpoint and body of the request, what
will run, and what can go wrong. Only a confirmed plan is executed, and its
result comes back as an `Outcome`. No Textual here, so the plans are unit-tested
and a future CLI can reuse them.
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.haproxy import AdminState, HaproxyError, HaproxyRuntime
from agent.schema import (
    ActionResult,
    GroupActionResult,
    GroupStatus,
    PlanCandidate,
    ProbeStatus,
    Runbook,
    ServiceStatus,
)
from agent.schema import Plan as AgentPlan
from console.agent_client import AgentClient, AgentRefused
from console.inventory import Haproxy
from console.transport import TransportError

_ACTOR_CHARS = re.compile(r"[^A-Za-z0-9_.@+-]")


def operator_identity() -> str:
    """`alice@bastion-1`: the login name behind the console (sudo's caller if any)."""
    user = os.environ.get("SUDO_USER") or getpass.getuser()
    host = socket.gethostname().split(".")[0]
    return _ACTOR_CHARS.sub("_", f"{user}@{host}")[:64]


@dataclass(frozen=True)
class HaproxyCommand:
    """A server state change through HAProxy's runtime API, instead of a request to an agent."""

    socket: Path
    backend: str
    server: str
    state: AdminState
    timeout: float = 3.0

    @property
    def line(self) -> str:
        return f"set server {self.backend}/{self.server} state {self.state}"


@dataclass(frozen=True)
class Plan:
    #: The host whose agent receives the request (for HAProxy plans: the member's host).
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
    #: Request fields sent with the operator's reason (`to`, `confirm`).
    body: dict[str, Any] = field(default_factory=dict)
    #: Set when the plan acts through HAProxy's runtime API rather than an agent.
    haproxy: HaproxyCommand | None = None
    #: What the notification and the dialog call it, when "action target on host" misleads.
    heading: str | None = None
    #: Whose plan this is: the agent's own (`with_agent_plan`), or the console's only.
    source: str = "the console"

    @property
    def title(self) -> str:
        return self.heading or f"{self.action} {self.target} on {self.host}"


@dataclass(frozen=True)
class Outcome:
    plan: Plan
    ok: bool
    message: str
    result: ActionResult | GroupActionResult | None = None


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


# -- HA groups ----------------------------------------------------------------


def _group_path(group: str, action: str) -> str:
    return f"/api/v1/groups/{group}/{action}"


def switchover(host: str, gs: GroupStatus, to: str | None) -> Plan:
    """Planned handover from the healthy primary to `to` (None: the best standby). Sent to
    `host`'s agent; any member's agent takes it. What it would do, and whether it would
    be refused, is the agent's plan (`with_agent_plan`), not a guess made here."""
    g = gs.name
    primary = gs.leader
    if to is not None and to == primary:
        raise ValueError(f"{to} is already the primary of {g}: pick a standby to switch over to")
    new = to or "the best standby"
    return Plan(
        host,
        "switchover",
        g,
        _group_path(g, "switchover"),
        [
            f"{primary or 'the primary'} runs its demote hook and releases the lease of {g}",
            f"{new} takes the lease and runs its promote hook",
            f"routing follows: /groups/{g}/primary answers 200 on {new} only",
        ],
        timeout=120.0 + 3 * gs.ttl,
        body={"to": to} if to is not None else {},
        heading=f"switchover {g} from {primary or 'no primary'} to {new}",
    )


def failover(host: str, gs: GroupStatus, to: str) -> Plan:
    """Forced promotion of `to` when there is no healthy primary; the operator types the
    group's name. Whatever `to` has not replicated (its lag) may be lost."""
    g = gs.name
    if to == gs.leader:
        raise ValueError(f"{to} already holds the lease of {g}: pick another member to promote")
    return Plan(
        host,
        "forced failover",
        g,
        _group_path(g, "failover"),
        [
            f"{gs.leader or 'the old primary'} demotes and releases the lease of {g} if its "
            f"agent still runs; otherwise the lease expires (ttl {gs.ttl:g}s)",
            f"{to} takes the lease with a new fencing token and runs its promote hook",
        ],
        ["whatever the target has not replicated (its lag) may be lost"],
        type_to_confirm=g,
        timeout=120.0 + 3 * gs.ttl,
        body={"to": to, "confirm": g},
        heading=f"forced failover of {g} to {to}",
    )


def pause(host: str, gs: GroupStatus) -> Plan:
    g = gs.name
    return Plan(
        host,
        "pause",
        g,
        _group_path(g, "pause"),
        [
            f"set the `paused` flag of {g} in the lease store ({gs.store})",
            "every member stops automatic failover and promotion; state is still reported",
        ],
        timeout=30.0,
        heading=f"pause {g}",
    )


def resume(host: str, gs: GroupStatus) -> Plan:
    g = gs.name
    return Plan(
        host,
        "resume",
        g,
        _group_path(g, "resume"),
        [
            f"clear the `paused` flag of {g} in the lease store ({gs.store})",
            "automatic failover and promotion are active again",
        ],
        timeout=30.0,
        heading=f"resume {g}",
    )


# -- the agent's own plan ---------------------------------------------------------


def _candidate(c: PlanCandidate) -> str:
    lag = "lag unknown" if c.lag is None else f"lag {c.lag:.1f}s"
    if c.rank is None:
        return f"{c.member}: {c.note}"
    return f"{c.rank}. {c.member} ({lag}, priority {c.priority})"


def with_agent_plan(plan: Plan, agent: AgentPlan) -> Plan:
    """The plan as the agent itself would carry it out now: its steps, its warnings, the
    standby it would choose (sent as the target, so what is confirmed is what happens:
    if that standby stops being eligible, the agent refuses instead of picking another)."""
    runs = list(agent.steps)
    if agent.candidates:
        runs.append(
            "standbys as the agents rank them: " + "; ".join(map(_candidate, agent.candidates))
        )
    body, heading = dict(plan.body), plan.heading
    if agent.action == "switchover" and agent.to_member is not None:
        body["to"] = agent.to_member
        heading = (
            f"switchover {agent.target} from {agent.from_member or 'no primary'} "
            f"to {agent.to_member}"
        )
    return replace(plan, runs=runs, warnings=list(agent.warnings), body=body, heading=heading,
                   source=f"{plan.host}'s agent")  # fmt: skip


def without_agent_plan(plan: Plan, why: str) -> Plan:
    """The console's description only, and why the agent's own plan is missing."""
    return replace(
        plan,
        warnings=[f"no preview from {plan.host}'s agent ({why}): it checks the request when "
                  "it gets it, and refuses with the reason", *plan.warnings],
        source="the console",
    )  # fmt: skip


def _haproxy_plan(
    host: str, gs: GroupStatus, member: str, config: Haproxy | None, state: AdminState
) -> Plan:
    g = gs.name
    example = f"haproxy: {{socket: /run/haproxy/admin.sock, backends: {{{g}: {g}_primary}}}}"
    if config is None:
        raise ValueError(
            f"no HAProxy in the inventory: add a top-level `{example}` "
            "(group name -> backend; its servers are named after the member ids)"
        )
    backend = config.backends.get(g)
    if backend is None:
        raise ValueError(
            f"no HAProxy backend for group {g} in the inventory: add `{g}: <backend>` "
            f"under haproxy.backends (now: {', '.join(sorted(config.backends))})"
        )
    command = HaproxyCommand(config.socket, backend, member, state, config.timeout)
    warnings = []
    if state == "drain" and member == gs.leader:
        warnings.append(
            f"{member} is the primary: drained, it takes no new connections and {g} has no "
            "other server to send them to; a switchover moves the primary instead"
        )
    if state == "ready":
        warnings.append(
            f"ready only lets HAProxy route to {member} while its check passes: "
            f"/groups/{g}/primary answers 200 on the primary only"
        )
    warnings.append("HAProxy keeps no audit record: the agents' audit logs will not show this")
    return Plan(
        host,
        state,
        f"{member} in {backend}",
        "",
        [command.line],
        warnings,
        timeout=config.timeout,
        haproxy=command,
        heading=f"{state} {member} in HAProxy backend {backend}",
    )


def drain(host: str, gs: GroupStatus, member: str, config: Haproxy | None) -> Plan:
    """HAProxy stops sending new connections to `member` (open ones stay): planned work."""
    return _haproxy_plan(host, gs, member, config, "drain")


def ready(host: str, gs: GroupStatus, member: str, config: Haproxy | None) -> Plan:
    """Undo a drain (or maint): HAProxy routes to `member` again when its check passes."""
    return _haproxy_plan(host, gs, member, config, "ready")


# -- running a plan -------------------------------------------------------------


def execute(
    client: AgentClient,
    plan: Plan,
    actor: str,
    reason: str = "",
    haproxy: Callable[[Path, float], HaproxyRuntime] = HaproxyRuntime,
) -> Outcome:
    """Blocking: run in a worker. Every failure becomes an Outcome, never an exception."""
    if plan.haproxy is not None:
        cmd = plan.haproxy
        try:
            haproxy(cmd.socket, cmd.timeout).set_state(cmd.backend, cmd.server, cmd.state)
        except HaproxyError as exc:
            return Outcome(plan, False, str(exc))
        return Outcome(plan, True, f"HAProxy: {cmd.backend}/{cmd.server} is now {cmd.state}")
    try:
        result = client.act(plan.path, actor, reason, plan.timeout, plan.body)
    except AgentRefused as exc:
        return Outcome(plan, False, f"{plan.host} refused: {exc}")
    except TransportError as exc:
        return Outcome(plan, False, f"{plan.host} unreachable: {exc}")
    return Outcome(plan, result.ok, result.message, result)
