"""Failsafe mode: a primary cut off from the lease store keeps its role while every other
member it last saw acknowledges it.

Without it, an unreachable store (etcd down, or this host partitioned from it) demotes
the primary at its deadline, and the whole group serves nothing until the store is
back: no standby can take a key either. With it, a primary whose renewal fails sends a
heartbeat to every other member of the group's *topology* (the members it last saw
while the store answered, written to the store as the `failsafe` flag). Each member
that accepts promises not to take the leader key for a ttl from the moment it
accepted. Only when every one of them has accepted does the primary move its deadline
to `sent + ttl - safety`, where `sent` is when the round started: earlier than any
promise began, so every promise outlasts the new deadline by at least `safety`. One
member that does not answer, or refuses, and the primary steps down at its deadline as
before.

A member refuses while it holds or is taking the key, and when the store (which it may
still reach) shows the key held by another acquisition. A promise is kept on disk
(PromiseFile) before it is acknowledged, and the acknowledgement is signed (`proof`), so
only the member asked can give it and a restart does not forget it. A member missing
from the topology the store holds takes the key only by an operator's forced failover,
so a member the primary did not ask cannot promote behind its back.

When the store answers again, a primary in failsafe mode whose lease ran out in the
meantime takes the key again while its own deadline still holds (the members promised
not to take it, the others do not on their own) and goes on, with a new fencing token.

What it does not cover: a store that lost its data (the topology with it) while a
member that was never in the topology starts and reaches it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from agent import clock
from agent.failover.lease import Leader

FLAG = "failsafe"


def encode_topology(members: dict[str, str | None]) -> str:
    return json.dumps(members, sort_keys=True)


def parse_topology(text: str | None) -> dict[str, str | None] | None:
    """The `failsafe` flag: member id -> address of its public listener (None: not
    published, so unreachable). None when absent or unreadable."""
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return {str(k): v if isinstance(v, str) and v else None for k, v in data.items()}


@dataclass(frozen=True)
class Promise:
    """Given by a standby that accepted a heartbeat: no acquisition before `until` (boot
    clock), whatever the store says."""

    holder: str
    token: int
    until: float

    def left(self) -> float:
        return max(0.0, self.until - clock.now())


class Refused(Exception):
    """A heartbeat this member does not acknowledge; the message says why."""


def refusal(
    *,
    member: str,
    sender: str,
    token: int,
    holds_or_takes: bool,
    leader: Leader | None,
) -> str | None:
    """Why this member does not accept `sender`'s heartbeat, or None when it does.

    `holds_or_takes`: this member holds the key, is promoting, or has an acquisition in
    flight. `leader`: the key as this member last read it from the store."""
    if sender == member:
        return "a heartbeat from this member itself"
    if holds_or_takes:
        return f"{member} holds or is taking the lease itself"
    if leader is not None and (leader.member != sender or leader.token != token):
        return (
            f"the lease store shows the lease held by {leader.member} (token {leader.token}), "
            f"not by {sender} (token {token})"
        )
    return None


def proof(secret: str, group: str, member: str, sender: str, token: int, nonce: str) -> str:
    """What an accepting member signs: the primary counts an acknowledgement only from the
    member it asked, for its own heartbeat (a copied address, or someone in the middle of
    plain HTTP, cannot answer for another member)."""
    text = "\n".join((group, member, sender, str(token), nonce))
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


class Heartbeats:
    """The primary's half: one round of heartbeats to every other member, in parallel,
    each bounded by `timeout`."""

    def __init__(self, group: str, member: str, secret: str, timeout: float) -> None:
        self.group, self.member, self.timeout = group, member, timeout
        self._secret = secret
        self._headers = {"Authorization": f"Bearer {secret}"}
        self._client: httpx.AsyncClient | None = None

    async def round(self, peers: dict[str, str | None], token: int) -> dict[str, str | None]:
        """Each peer's refusal in words, or None where it accepted."""
        names = sorted(peers)
        answers = await asyncio.gather(*(self._ask(n, peers[n], token) for n in names))
        return dict(zip(names, answers, strict=True))

    async def _ask(self, name: str, address: str | None, token: int) -> str | None:
        if address is None:
            return "it published no address"
        nonce = secrets.token_hex(16)
        try:
            if self._client is None:
                self._client = httpx.AsyncClient(trust_env=False, headers=self._headers)
            r = await asyncio.wait_for(
                self._client.post(
                    f"http://{address}/groups/{self.group}/failsafe",
                    params={"member": self.member, "token": str(token), "to": name, "nonce": nonce},
                    timeout=self.timeout,
                ),
                self.timeout,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever a peer or its address does: no acknowledgement
            return f"no answer from {address} ({type(exc).__name__})"
        if r.status_code != 200:
            return f"HTTP {r.status_code}: {_detail(r)}"
        try:
            body: Any = r.json()
        except ValueError:
            body = None
        signed = body.get("proof") if isinstance(body, dict) else None
        expected = proof(self._secret, self.group, name, self.member, token, nonce)
        if not isinstance(signed, str) or not hmac.compare_digest(signed, expected):
            return f"an answer from {address} that {name} did not sign"
        return None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class PromiseFile:
    """A standby's promise outlives a restart of its agent: kept in
    `<state_dir>/failsafe-<group>.json` (written whole, fsynced) with the boot it was made
    in. An agent that starts within a promise its predecessor gave keeps it; one that
    finds a promise from an earlier boot, or a file it cannot read, cannot tell how long
    ago it was given and keeps it for a whole ttl from its start."""

    def __init__(self, path: Path, ttl: float) -> None:
        self.path, self.ttl = path, ttl
        self._lock = asyncio.Lock()

    def load(self) -> Promise | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            holder, token, until = str(data["holder"]), int(data["token"]), float(data["until"])
            boot = str(data["boot"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return Promise("a promise this agent cannot read back", -1, clock.now() + self.ttl)
        if boot != clock.boot_id():
            return Promise(holder, token, clock.now() + self.ttl)
        return Promise(holder, token, until) if until > clock.now() else None

    async def save(self, promise: Promise) -> None:
        """Raises OSError when the disk refuses it (full, read-only)."""
        async with self._lock:
            await asyncio.to_thread(self._write, promise)

    def _write(self, promise: Promise) -> None:
        text = json.dumps({**asdict(promise), "boot": clock.boot_id()})
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _detail(r: httpx.Response) -> str:
    try:
        body: Any = r.json()
    except ValueError:
        return r.text[:200]
    return str(body.get("error", body))[:200] if isinstance(body, dict) else str(body)[:200]
