"""The agent's wire format: every API payload is one of these models.

This is the one place API payloads are defined; the console imports these
models rather than guessing at JSON. Times are Unix seconds (floats, UTC).

A fleet is upgraded host by host, so a console reads agents one `api_version`
older or newer than its own: what the agent sends (`Answer`) ignores fields it
does not know, and results say what they are in `kind`; what the agent
receives (`Request`) is validated strictly. Version 1 is every agent from
before `api_version` was sent (its answers have neither that field nor `kind`).
Version 3: group switchovers and failovers answer `202` with an operation, and
every mutating request takes `dry_run` (answered with a `Plan`); a console only
sends `dry_run` to an agent of version 3 or later (version 2 refuses the unknown
field with a 422; an agent that ignored it would act).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

ProbeStateName = Literal["up", "down", "unknown", "unavailable"]
RecoveryStateName = Literal["idle", "recovering", "verifying", "backoff", "held", "gave_up"]
Severity = Literal["info", "warning", "critical"]


#: The version of this wire format; bumped when a field changes meaning or goes away.
API_VERSION = 3


class Answer(BaseModel):
    """What the agent sends: a reader from another version ignores fields it does not know."""

    model_config = ConfigDict(extra="ignore")


class Request(BaseModel):
    """What the agent receives: validated strictly, an unknown field is a 422."""

    model_config = ConfigDict(extra="forbid")


class ProbeResult(Answer):
    ts: float
    ok: bool
    latency_seconds: float
    detail: str


class ProbeStatus(Answer):
    name: str
    kind: str
    target: str = Field(description="What the probe checks, e.g. `GET https://x/health`.")
    state: ProbeStateName
    since: float | None
    flapping: bool
    interval_seconds: float
    fall: int
    rise: int
    consecutive_failures: int
    consecutive_successes: int
    services: list[str]
    last: ProbeResult | None
    recent: list[ProbeResult] = Field(
        description="Recent results, oldest first (latency sparklines)."
    )


class RecoveryAttempt(Answer):
    ts: float
    step: str
    result: str
    detail: str
    duration_seconds: float


class RecoveryStatus(Answer):
    state: RecoveryStateName
    reason: str
    attempts_in_window: int
    max_attempts: int
    window_seconds: float
    next_attempt_at: float | None
    steps: list[str]
    history: list[RecoveryAttempt]


class ServiceStatus(Answer):
    name: str
    state: ProbeStateName
    since: float | None
    flapping: bool
    probes: list[str]
    depends_on: list[str]
    restartable: bool
    restart_command: list[str] | None = Field(
        description="The argv a restart runs (shown in the console's confirmation)."
    )
    recovery: RecoveryStatus | None


class DiskUsage(Answer):
    mount: str
    total_bytes: int
    free_bytes: int
    used_ratio: float


class Resources(Answer):
    sampled_at: float | None
    cpu_ratio: float | None
    load1: float | None
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    memory_used_ratio: float | None
    disks: list[DiskUsage]


class Event(Answer):
    id: int
    ts: float
    kind: str
    severity: Severity
    service: str | None
    probe: str | None
    message: str
    evidence: dict[str, Any]


class Runbook(Answer):
    name: str
    description: str
    steps: list[list[str]]


class HostStatus(Answer):
    api_version: int = API_VERSION
    host: str
    version: str
    started_at: float
    uptime_seconds: float
    now: float
    config_loaded_at: float
    summary: dict[str, int] = Field(
        description="Counts: services_up, services_down, probes_failing, flapping, gave_up."
    )
    services: list[ServiceStatus]
    probes: list[ProbeStatus]
    resources: Resources
    problems: list[Event] = Field(description="Recent warning and critical events, newest last.")
    runbooks: list[Runbook]
    groups: list[GroupStatus] = Field(
        default_factory=list, description="This host's HA group memberships."
    )


class AuditRecord(Answer):
    seq: int
    ts: float
    actor: str
    action: str
    target: str
    params: dict[str, Any]
    result: dict[str, Any]
    prev: str
    hash: str
    on_disk: bool = Field(
        default=True,
        description="False while the record waits for the disk (full, failing): it is chained "
        "and will be written before any later record.",
    )


class ActionRequest(Request):
    reason: str = Field(default="", max_length=500, description="Why, for the audit log.")
    dry_run: bool = Field(
        default=False, description="Change nothing: answer the Plan (what would run, or why not)."
    )


class StepOutcome(Answer):
    argv: list[str]
    exit_code: int | None
    timed_out: bool
    duration_seconds: float
    output: str = Field(description="The tail of the command's combined output.")


class ActionResult(Answer):
    kind: Literal["action"] = "action"
    api_version: int = API_VERSION
    ok: bool
    action: str
    target: str
    actor: str
    started_at: float
    duration_seconds: float
    message: str
    steps: list[StepOutcome] = Field(default_factory=list)
    probe: ProbeResult | None = None
    #: The action's audit record; None only when it could not even be kept in memory.
    audit_seq: int | None
    #: None when the audit record is on disk; else why not (it is kept and retried).
    audit_error: str | None = None


class Problem(Answer):
    """Every 4xx answer: what is wrong, in a sentence."""

    error: str
    detail: Any = None


class GroupMemberStatus(Answer):
    member: str
    healthy: bool
    lag: float | None
    priority: int
    role: str
    note: str = Field(description="`eligible`, or why this member cannot become primary.")
    address: str | None
    updated_at: float


class HandoverRecord(Answer):
    at: float
    from_member: str | None
    to_member: str
    token: int
    kind: str = Field(description="failover, switchover or forced failover (`failover` request).")
    reason: str
    actor: str
    steps: dict[str, float] = Field(description="Seconds per step: detect, acquire, promote.")


class GroupStatus(Answer):
    api_version: int = API_VERSION
    name: str
    member: str = Field(description="This host's member id.")
    role: str = Field(description="standby, promoting, primary or demoting (this member).")
    routed: bool = Field(description="This member answers 200 on /groups/<name>/primary.")
    healthy: bool
    lag: float | None
    priority: int
    service: str
    paused: bool
    leader: str | None = Field(description="The lease holder as last seen in the lease store.")
    token: int | None = Field(description="The lease holder's fencing token.")
    lease_ttl_left: float | None
    valid_for: float | None = Field(description="Seconds this primary stays valid unrenewed.")
    ttl: float
    loop_wait: float
    store: str
    store_error: str | None
    request: dict[str, Any] | None = Field(description="A pending switchover or failover.")
    members: list[GroupMemberStatus]
    last_handover: HandoverRecord | None
    failsafe: str | None = Field(
        default=None,
        description="Failsafe mode, where it is on and doing something: this primary holds "
        "on by it, or this standby promised not to take the lease, or why not.",
    )


class GroupActionRequest(Request):
    to: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
        description="Target member (switchover: default the best standby; failover: this one).",
    )
    reason: str = Field(default="", max_length=500)
    confirm: str | None = Field(
        default=None, max_length=100, description="Forced failover: the group's name, typed."
    )
    dry_run: bool = Field(
        default=False, description="Change nothing: answer the Plan (what would run, or why not)."
    )


class GroupActionResult(Answer):
    kind: Literal["group_action"] = "group_action"
    api_version: int = API_VERSION
    ok: bool
    action: str
    group: str
    actor: str
    message: str
    from_member: str | None
    to_member: str | None
    duration_seconds: float
    audit_seq: int | None
    audit_error: str | None = None


HostStatus.model_rebuild()


class PlanCandidate(Answer):
    """A member as a handover would weigh it, in the agent's own order."""

    member: str
    healthy: bool
    lag: float | None
    priority: int
    note: str = Field(description="`eligible`, or why it cannot become primary now.")
    rank: int | None = Field(description="1 for the one chosen; None when not eligible.")


class Plan(Answer):
    """The answer to `dry_run: true`: what the request would do, or why it would be refused,
    by the agent's own rules and state at this moment. Nothing changed, nothing audited."""

    kind: Literal["plan"] = "plan"
    api_version: int = API_VERSION
    action: str
    target: str
    ok: bool = Field(description="The request would be carried out now.")
    refusal: str | None = Field(description="Why the request would be refused.")
    status: int = Field(description="What the request would answer: 200, 202, or the 4xx.")
    steps: list[str] = Field(description="What would run, in order.")
    warnings: list[str] = Field(default_factory=list)
    confirm: str | None = Field(default=None, description="The word the request must carry.")
    from_member: str | None = None
    to_member: str | None = None
    candidates: list[PlanCandidate] = Field(default_factory=list)

    @classmethod
    def refused(cls, action: str, target: str, status: int, message: str, **fields: Any) -> Plan:
        """A plan that stops before any step: the request would get `status` and `message`."""
        return cls(
            action=action, target=target, ok=False, refusal=message, status=status, steps=[],
            **fields,
        )  # fmt: skip


class OperationProgress(Answer):
    message: str = ""
    fraction: float | None = Field(default=None, description="0 to 1, where it can be told.")
    done: int | None = None
    total: int | None = None
    unit: str | None = Field(default=None, description="What `done` and `total` count.")
    eta_seconds: float | None = None


OperationState = Literal["running", "cancelling", "succeeded", "failed", "cancelled", "interrupted"]


class Operation(Answer):
    """An action that outlives its request (`202`): follow it at /api/v1/operations/{id}."""

    kind: Literal["operation"] = "operation"
    api_version: int = API_VERSION
    id: str
    type: str = Field(description="What it does, e.g. group_switchover, backup.")
    target: str
    actor: str
    params: dict[str, Any]
    state: OperationState
    created_at: float
    finished_at: float | None
    duration_seconds: float
    progress: OperationProgress
    result: dict[str, Any] = Field(description="When finished: what it did (type-specific).")
    error: str | None = Field(description="Why it failed, was cancelled or interrupted.")


def sent_api_version(answer: BaseModel) -> int:
    """The api_version of the agent that sent `answer` (version 1 did not send it)."""
    version = getattr(answer, "api_version", 1)
    return int(version) if "api_version" in answer.model_fields_set else 1


def _result_kind(value: Any) -> str:
    """`kind` as sent; an agent of api_version 1 sent none, and only group results had
    a `group`."""
    if isinstance(value, dict):
        return str(value.get("kind") or ("group_action" if "group" in value else "action"))
    return str(getattr(value, "kind", "action"))


#: Any result of a mutating request, told apart by `kind`.
Result = Annotated[
    Annotated[ActionResult, Tag("action")] | Annotated[GroupActionResult, Tag("group_action")],
    Discriminator(_result_kind),
]
