"""The lease store: the one interface both backends (SQLite, etcd) implement.

A group has at most one leader key. It is created only where none exists
(compare-and-swap), lives for `ttl` seconds unless its holder renews it, and
carries a fencing token: a number that only grows across acquisitions, so a
downstream system can refuse a primary whose token is older than one it has
seen. Members also publish a small record (health, lag, priority) with the same
kind of expiry, and a group has flags (paused, a requested switchover) and a
history of handovers.

Every call is bounded by the store's timeout and raises `LeaseStoreError` when
the store cannot answer; the caller (the member loop) treats that as "cannot
renew", which is what keeps a partitioned primary from staying primary.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


class LeaseStoreError(Exception):
    """The store did not answer, or answered something unusable; the message says which."""


@dataclass(frozen=True)
class Leader:
    group: str
    member: str
    #: Grows with every acquisition of the group's key (never reused).
    token: int
    #: Seconds of lease left as the store sees it (None when it cannot tell).
    ttl_left: float | None = None


@dataclass(frozen=True)
class MemberRecord:
    member: str
    healthy: bool
    lag: float | None
    priority: int
    role: str
    #: Why it is (not) eligible, in words, for plans and the console.
    note: str = ""
    #: The member agent's address for routing checks (host:port of its public listener).
    address: str | None = None
    updated_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> MemberRecord:
        data = json.loads(text)
        return cls(**{k: data[k] for k in data if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Release:
    """The `released` flag: written by a primary that has stepped down (its demote hook
    succeeded) just before it deletes its key. It tells the standbys that this key's end
    was graceful, so they need not wait out its holder's deadline."""

    token: int
    member: str
    at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def parse(cls, text: str | None) -> Release | None:
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(int(data["token"]), str(data["member"]), float(data["at"]))
        except (ValueError, TypeError, KeyError):
            return None


def certainly_free(
    seen: Leader,
    seen_at: float,
    gone_at: float,
    released: Release | None,
    ttl: float,
    safety: float,
    resolution: float,
) -> tuple[float, str]:
    """When a leader key this standby no longer sees is certainly nobody's, and why.

    A key can vanish while its holder still believes it is primary (revoked or deleted
    in the store, a store restored or restarted empty): the holder keeps its local
    deadline, up to `ttl - safety` after its last renewal, and cannot learn otherwise
    while it is cut off. Three cases are told apart:

    - released: the holder said so in the `released` flag with this key's token;
    - expired: when last seen, the key had so little left (`ttl_left` plus the store's
      rounding, `resolution`) that its holder's deadline had already passed, and a
      holder past its deadline never renews;
    - otherwise the holder may have renewed up to the moment the key vanished, so its
      deadline is at most `gone_at + ttl - safety`; the standby waits a full `ttl` from
      its last sight (and never less than that bound).

    Times are on the standby's own clock; only durations cross machines.
    """
    who = f"{seen.member}'s lease (token {seen.token})"
    if released is not None and released.token == seen.token:
        return gone_at, f"{who} was released by its holder"
    left = seen.ttl_left
    if left is not None and left + resolution <= safety:
        return gone_at, f"{who} expired: it had {left:g}s left when last seen"
    told = "an unknown time" if left is None else f"{left:g}s"
    return max(seen_at + ttl, gone_at + ttl - safety), (
        f"{who} vanished with {told} left when last seen (revoked, deleted or the store "
        f"lost it); its holder may still think it is primary, so a full ttl ({ttl:g}s) "
        "passes from that sight before anyone takes the key"
    )


def ranked(records: Iterable[MemberRecord]) -> list[MemberRecord]:
    """The members that may become primary, best first: the one order every election,
    switchover and plan uses (lowest lag, then highest priority, then name)."""
    eligible = [r for r in records if r.healthy and r.note == "eligible"]
    return sorted(eligible, key=lambda r: (r.lag or 0.0, -r.priority, r.member))


@dataclass(frozen=True)
class Handover:
    """One change of primary, as written by the member that became primary."""

    group: str
    at: float
    from_member: str | None
    to_member: str
    token: int
    kind: str  # failover | switchover | forced_failover | initial
    reason: str
    actor: str
    steps: dict[str, float] = field(default_factory=dict)  # step name -> seconds

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Handover:
        data: dict[str, Any] = json.loads(text)
        return cls(**{k: data[k] for k in data if k in cls.__dataclass_fields__})


class LeaseStore(ABC):
    """Implemented by lease_sqlite.SqliteLeaseStore and lease_etcd.EtcdLeaseStore."""

    #: How coarse `Leader.ttl_left` is: the true remaining time is below ttl_left + this.
    ttl_resolution: float = 0.0

    @abstractmethod
    async def leader(self, group: str) -> Leader | None:
        """The current holder of the group's key, or None if there is none (or it expired)."""

    @abstractmethod
    async def acquire(self, group: str, member: str, ttl: float) -> Leader | None:
        """Create the key for `member` if there is none; None if someone else holds it."""

    @abstractmethod
    async def renew(self, leader: Leader, ttl: float) -> bool:
        """Extend the lease; False if the key is gone or no longer this acquisition's."""

    @abstractmethod
    async def release(self, leader: Leader) -> bool:
        """Delete the key if it is still this acquisition's; True if it was deleted."""

    @abstractmethod
    async def publish(self, group: str, record: MemberRecord, ttl: float) -> None:
        """Write this member's record; it disappears `ttl` seconds after the last write."""

    @abstractmethod
    async def members(self, group: str) -> list[MemberRecord]:
        """Every member record that has not expired."""

    @abstractmethod
    async def get_flag(self, group: str, name: str) -> str | None: ...

    @abstractmethod
    async def set_flag(self, group: str, name: str, value: str | None) -> None:
        """Set a flag (None deletes it). Flags: `paused`, `request`, `released`."""

    @abstractmethod
    async def add_history(self, entry: Handover) -> None: ...

    @abstractmethod
    async def history(self, group: str, limit: int = 50) -> list[Handover]:
        """Newest first."""

    @abstractmethod
    async def close(self) -> None: ...
