"""The HA groups subsystem: this host's membership in each group, over one lease store.

It owns the `groups` and `lease_store` sections; changing either takes a restart
(a member holding a lease must hand it over, not be rebuilt under it). Not
imported at all on a host without groups.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from functools import partial

from fastapi import APIRouter

from agent.config import AgentConfig, Group, read_secret
from agent.failover.lease import LeaseStore
from agent.failover.member import GroupMember
from agent.failover.metrics import GroupMetrics
from agent.failover.operations import GroupOperations
from agent.subsystem import Core, ReloadError, Subsystem
from agent.supervision import Supervision


def open_lease_store(cfg: AgentConfig) -> LeaseStore:
    ls = cfg.lease_store
    if ls.kind == "etcd":
        from agent.failover.lease_etcd import EtcdLeaseStore

        return EtcdLeaseStore(ls.endpoints, ls.prefix, ls.timeout)
    from agent.failover.lease_sqlite import SqliteLeaseStore

    return SqliteLeaseStore(ls.path or cfg.agent.state_dir / "leases.db", ls.timeout)


def failover_after(cfg: AgentConfig, group: Group) -> float:
    """Default: at once without local recovery, else after one pass of the recovery ladder."""
    if group.failover_after is not None:
        return group.failover_after
    recovery = cfg.services[group.service].recovery
    return 0.0 if recovery is None else len(recovery.steps) * recovery.verify_window


#: A failsafe secret any shorter is refused at start (as the API token is).
MIN_SECRET = 16


def failsafe_secrets(cfg: AgentConfig) -> dict[str, str]:
    """Each failsafe group's shared secret, read at start; a ReloadError names the field."""
    secrets, problems = {}, []
    for name, group in cfg.groups.items():
        if group.failsafe is None:
            continue
        where = f"groups.{name}.failsafe.secret"
        try:
            secret = read_secret(group.failsafe.secret)
        except (OSError, KeyError, UnicodeDecodeError) as exc:
            problems.append(f"{where}: cannot read it: {exc}")
            continue
        if len(secret) < MIN_SECRET:
            problems.append(f"{where}: shorter than {MIN_SECRET} characters")
            continue
        if not (secret.isascii() and secret.isprintable()) or any(c.isspace() for c in secret):
            # It travels in an HTTP header.
            problems.append(f"{where}: only printable ASCII characters, without white space")
            continue
        secrets[name] = secret
    if problems:
        raise ReloadError(problems)
    return secrets


def build(core: Core, cfg: AgentConfig, running: Mapping[str, Subsystem]) -> HaGroups:
    supervision = running["probes"]
    if not isinstance(supervision, Supervision):
        raise TypeError(f"HA groups need the supervision subsystem, not {supervision!r}")
    return HaGroups(core, cfg, supervision)


class HaGroups(Subsystem):
    name = "groups"
    sections = ("groups", "lease_store")
    restart_sections = ("groups", "lease_store")

    def __init__(self, core: Core, cfg: AgentConfig, supervision: Supervision) -> None:
        super().__init__(core, cfg)
        self.lease_store = open_lease_store(cfg)
        self.metrics = GroupMetrics(core.metrics.registry)
        secrets = failsafe_secrets(cfg)
        self.members: dict[str, GroupMember] = {
            name: GroupMember(
                name,
                group,
                group.member or cfg.agent.name,
                self.lease_store,
                core.events,
                core.journal,
                partial(supervision.service_health, group.service),
                failover_after(cfg, group),
                self.metrics,
                cfg.agent.state_dir,
                secrets.get(name),
            )
            for name, group in cfg.groups.items()
        }
        self.operations = GroupOperations(self.members, core.events, core.journal, core.operations)
        supervision.listeners.append(self._service_changed)

    def _service_changed(self, service: str) -> None:
        for member in self.members.values():
            if member.cfg.service == service:
                member.poke()

    # -- what its routers read (agent/failover/api.py GroupsView) ------------

    @property
    def groups(self) -> dict[str, GroupMember]:
        return self.members

    @property
    def group_ops(self) -> GroupOperations:
        return self.operations

    def routers(self) -> Sequence[APIRouter]:
        from agent.failover.api import group_router, routing_router

        return [routing_router(self), group_router(self)]

    def public_routers(self) -> Sequence[APIRouter]:
        from agent.failover.api import failsafe_router, routing_router

        return [routing_router(self), failsafe_router(self)]

    def start(self) -> None:
        for member in self.members.values():
            member.start()

    async def stop(self) -> None:
        """A primary hands over (demote, release) before its service's supervision stops."""
        await asyncio.gather(*(m.stop() for m in self.members.values()))
        await self.lease_store.close()
