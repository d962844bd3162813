"""The `groups` and `lease_store` sections: this host's part in HA groups, and where leases live."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, model_validator

from agent.config.base import (
    NAME,
    NAME_RULE,
    CommandStep,
    ConfigPath,
    Count,
    Duration,
    Issue,
    Name,
    PositiveDuration,
    Secret,
    Strict,
    check_address,
    check_names,
    http_url,
    unknown,
)
from agent.config.errors import ReferenceErrors
from agent.config.services import Service


class GroupHooks(Strict):
    """Commands run on role changes; each gets HADECK_GROUP, HADECK_MEMBER, HADECK_ROLE and
    (promote) HADECK_FENCING_TOKEN in its environment."""

    promote: CommandStep
    demote: CommandStep
    #: Make sure this member serves no writes: run by the fencing process at the lease
    #: deadline when the agent has not stepped down by then (frozen, killed), and by the
    #: agent when `demote` fails. It may run beside a late `demote`: make it idempotent.
    fence: CommandStep | None = None
    #: Make this standby replicate from the current primary: run when a standby first sees
    #: a primary, and again whenever another member or a newer lease takes over, with
    #: HADECK_PRIMARY (its member id), HADECK_PRIMARY_ADDRESS (its `address`, if
    #: published) and HADECK_FENCING_TOKEN. A former primary rejoins this way (pg_rewind,
    #: say). The member is not promoted while it runs; a failure is retried with backoff.
    follow: CommandStep | None = None


class WatchdogSection(Strict):
    """A Linux watchdog device the fencing process arms while this member is primary and
    kicks only while the lease holds (agent/failover/fencer.py). Absent: no watchdog."""

    #: `/dev/watchdog` (hardware, or the `softdog` module). A FIFO stands in for one in tests.
    device: ConfigPath = Path("/dev/watchdog")
    #: Whole seconds; default ttl - 2 x loop_wait, rounded down. A kick never carries the
    #: host past the lease's earliest end elsewhere.
    timeout: Annotated[int, Field(ge=1)] | None = None


class RoutingFence(Strict):
    """An HAProxy whose `backend` has this group's members as servers, named by member id,
    reached through its runtime API (a `stats socket ... level admin` on this host)."""

    socket: ConfigPath
    backend: Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,256}$")]
    timeout: PositiveDuration = 1.0


class FailsafeSection(Strict):
    """Failsafe mode (docs/failover.md): with the lease store unreachable, the primary keeps
    its role for as long as every other member it last saw acknowledges it, each promising
    not to take the lease for a ttl. Every member of the group needs the same section."""

    #: Shared by every member of the group: a heartbeat without it is refused, so nobody
    #: else on the network can hold back a failover by posting heartbeats.
    secret: Secret
    #: Each heartbeat round's limit; default half of loop_wait.
    timeout: PositiveDuration | None = None


class Group(Strict):
    """This host's membership in an HA group: one primary among its members, never two.

    Timing contract (see docs/failover.md): the primary renews its lease every
    `loop_wait` and stops being primary `safety` seconds before the lease could
    expire anywhere, so `ttl` must leave room for a renewal that times out.
    """

    member: Name | None = None  # default: agent.name
    priority: Count = Field(default=100, ge=0)
    service: str
    hooks: GroupHooks
    lag: CommandStep | None = None
    max_lag: float | None = Field(default=None, ge=0)
    ttl: PositiveDuration = 10.0
    loop_wait: PositiveDuration = 1.0
    #: How long the primary's service may stay down before it hands over. Default: 0 without
    #: a recovery policy, else one pass of the service's ladder (steps x verify_window).
    failover_after: Duration | None = None
    #: Where other hosts reach this member's public listener (shown in plans and the console).
    address: Annotated[str, AfterValidator(check_address)] | None = None
    watchdog: WatchdogSection | None = None
    #: HAProxies a new primary takes the old primary out of (`maint`) before it promotes.
    haproxy: list[RoutingFence] = Field(default_factory=list)
    #: Off by default: an unreachable lease store then demotes the primary at its deadline.
    failsafe: FailsafeSection | None = None

    @property
    def failsafe_timeout(self) -> float | None:
        if self.failsafe is None:
            return None
        return self.failsafe.timeout or self.loop_wait / 2

    @property
    def watchdog_timeout(self) -> int | None:
        if self.watchdog is None:
            return None
        return self.watchdog.timeout or max(1, math.floor(self.ttl - 2 * self.loop_wait))

    @model_validator(mode="after")
    def _hooks_fit_the_margin(self) -> Group:
        """A primary that cannot renew runs `demote` at its deadline, and its fencing process
        runs `fence` at the same moment if the agent has not stepped down (frozen, killed):
        `loop_wait` before the lease can expire and another member take it
        (docs/failover.md). Each must have ended by then, or two members act as primary."""
        margin, hooks = self.loop_wait, self.hooks
        remedy = "shorten the hook's timeout, or raise loop_wait (and ttl with it)"
        problems: list[Issue] = []
        for name, step in (("demote", hooks.demote), ("fence", hooks.fence)):
            if step is not None and step.timeout > margin:
                problems.append(
                    (
                        ("hooks", name, "timeout"),
                        f"{step.timeout:g}s is longer than the margin of loop_wait "
                        f"({margin:g}s): a primary that cannot renew its lease runs {name} at "
                        f"its deadline, loop_wait before another member can take the lease; "
                        f"{remedy}",
                    )
                )
        wd = self.watchdog_timeout
        if wd is not None and wd > self.ttl - 2 * self.loop_wait:
            problems.append(
                (
                    ("watchdog", "timeout"),
                    f"{wd}s is longer than ttl - 2 x loop_wait "
                    f"({self.ttl - 2 * self.loop_wait:g}s): a kick must leave a whole loop to "
                    "renew and still fire before the lease can expire elsewhere",
                )
            )
        if self.failsafe is not None:
            if self.address is None:
                problems.append(
                    (
                        ("failsafe",),
                        "failsafe mode needs this member's `address`: the primary sends its "
                        "heartbeats to every other member's public listener",
                    )
                )
            timeout = self.failsafe_timeout or 0.0
            if timeout >= self.loop_wait:
                problems.append(
                    (
                        ("failsafe", "timeout"),
                        f"{timeout:g}s is not shorter than loop_wait ({self.loop_wait:g}s): a "
                        "heartbeat round must end within one loop",
                    )
                )
        if problems:
            raise ReferenceErrors(problems)
        return self


def _endpoint(value: str) -> str:
    """An etcd client URL: the store adds the API's paths to it, so it has none of its own."""
    http_url(value)
    url = urlsplit(value)
    if url.path not in ("", "/") or url.query or url.fragment or "@" in url.netloc:
        raise ValueError(
            f"no path, query or user in an endpoint: {value!r} (write http://HOST:2379)"
        )
    return value


class LeaseStoreSection(Strict):
    kind: Literal["sqlite", "etcd"] = "sqlite"
    #: sqlite: the database file every member on this machine shares.
    path: ConfigPath | None = None
    #: etcd: client URLs of the cluster (its v3 JSON gateway).
    endpoints: list[Annotated[str, AfterValidator(_endpoint)]] = Field(
        default_factory=lambda: ["http://127.0.0.1:2379"]
    )
    prefix: str = "/hadeck"
    timeout: PositiveDuration = 2.0

    @model_validator(mode="after")
    def _some_endpoint(self) -> LeaseStoreSection:
        if self.kind == "etcd" and not self.endpoints:
            raise ReferenceErrors(
                [(("endpoints",), "etcd needs at least one endpoint (its client URLs)")]
            )
        return self


def references(
    groups: dict[str, Group],
    lease_store: LeaseStoreSection,
    services: dict[str, Service],
    agent_name: str,
    public_listen: str | None = None,
) -> list[Issue]:
    """Names, each group's service, each group's ttl against its loop and the store, and a
    public listener where failsafe heartbeats must arrive."""
    problems = check_names("groups", groups)
    for gname, group in groups.items():
        if group.member is None and not NAME.fullmatch(agent_name):
            problems.append(
                (
                    ("groups", gname, "member"),
                    f"the member id defaults to agent.name, {agent_name!r}, which is not a "
                    f"valid member id ({NAME_RULE}): set `member`",
                )
            )
        if group.service not in services:
            problems.append(
                (("groups", gname, "service"), unknown("service", group.service, services))
            )
        floor = 3 * group.loop_wait + lease_store.timeout
        if group.ttl < floor:
            problems.append(
                (
                    ("groups", gname, "ttl"),
                    f"ttl ({group.ttl:g}s) must be at least 3 x loop_wait + lease_store.timeout"
                    f" ({floor:g}s): one loop to renew, one for a renewal that times out, "
                    "one to demote before the lease can expire elsewhere",
                )
            )
        if group.failsafe is not None and public_listen is None:
            problems.append(
                (
                    ("groups", gname, "failsafe"),
                    "failsafe mode needs api.public_listen: the other members' heartbeats "
                    "arrive on the public listener",
                )
            )
    return problems
