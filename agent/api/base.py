"""What the API's routers share: the view of the running agent they read, and input rules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Protocol

from fastapi import Path

from agent.actions import Actions
from agent.audit import AuditLog
from agent.config import AgentConfig
from agent.events import EventLog
from agent.journal import Journal
from agent.metrics import Metrics
from agent.operations import Operations
from agent.schema import Resources
from agent.store import Store
from agent.supervisor import Supervisor

if TYPE_CHECKING:  # the HA groups are imported only where they are configured
    from agent.failover.member import GroupMember

#: SQLite's largest integer: a bigger cursor is a client's mistake (422), not a crash (500).
MAX_ID = 2**63 - 1
NAME = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]


class SupervisionView(Protocol):
    """What the probes', services' and runbooks' routes read: the supervision subsystem
    (agent/supervision.py), whose supervisor is replaced on reload, so read per request."""

    @property
    def supervisor(self) -> Supervisor: ...
    @property
    def actions(self) -> Actions: ...


class AgentView(Protocol):
    """What the API reads of the running agent; the supervisor changes on reload, so routes
    read it from here on every request, never keep it."""

    token: str
    started_at: float
    config_loaded_at: float

    @property
    def config(self) -> AgentConfig: ...
    @property
    def supervisor(self) -> Supervisor: ...
    @property
    def actions(self) -> Actions: ...
    @property
    def store(self) -> Store: ...
    @property
    def audit(self) -> AuditLog: ...
    @property
    def events(self) -> EventLog: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def resources(self) -> Resources: ...
    @property
    def groups(self) -> dict[str, GroupMember]: ...
    @property
    def operations(self) -> Operations: ...
    @property
    def journal(self) -> Journal: ...
