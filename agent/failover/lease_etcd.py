"""Leases in etcd v3: for members on different machines.

Talks to etcd's JSON gateway (grpc-gateway, `/v3/...`) with httpx, so the agent
needs no etcd client library and no gRPC stack. Written against etcd 3.4 (Debian
bookworm's etcd-server); newer releases serve the same paths.

Keys, under `prefix` (default `/hadeck`)::

    {prefix}/{group}/leader             {"member": ...}, attached to the holder's lease
    {prefix}/{group}/members/{member}   MemberRecord JSON, attached to a per-member lease
    {prefix}/{group}/flags/{name}       plain value, no lease
    {prefix}/{group}/history/{token:020d}-{random}   Handover JSON, no lease

What etcd guarantees and this module relies on:

- The leader key is created in one transaction that compares its
  `create_revision` with 0 (absent), so at most one acquisition succeeds.
- The fencing token is the key's `create_revision`: etcd's cluster-wide revision
  at the moment of creation, which only grows, across groups and restarts. (It
  starts again only if the cluster's data is wiped.)
- Expiry is etcd's: the leader's lease is granted with TTL `ceil(ttl)` seconds,
  because etcd counts leases in whole seconds, and etcd raises it to its
  minimum, 1.5 x the election timeout rounded up (2 s with the default 1000 ms).
  `Leader.ttl_left` reports the TTL etcd actually granted. Expiry is detected
  by etcd's leader about every 500 ms, so a key outlives its TTL by up to ~0.5 s.
- A keepalive resets the lease to its *granted* TTL; it cannot change it, so
  `renew(ttl=...)` ignores a `ttl` that differs from the acquisition's.
- When etcd restarts or elects a new leader, it extends every lease by a full
  TTL (lease promotion), so a key whose holder stopped renewing during an outage
  still lives one more TTL afterwards. That only delays a failover; it never
  lets two members hold the key.

Lease ids live in this object (`acquire` remembers them for `renew` and
`release`; `publish` keeps one lease per member record), so `renew` of a
Leader this object did not acquire returns False: a restarted agent acquires
again rather than adopting its predecessor's lease.

Every public call is bounded by `timeout` as a whole, however many requests it
makes, and raises `LeaseStoreError` naming the operation and the endpoint when
etcd does not answer, refuses, or answers something unusable. A connection that
cannot be opened moves on to the next endpoint; a request that may have reached
etcd is never retried elsewhere (it may have been applied).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import httpx

from agent.failover.lease import Handover, Leader, LeaseStore, LeaseStoreError, MemberRecord

#: gRPC status code etcd answers for a lease that does not exist (expired or revoked).
GRPC_NOT_FOUND = 5


class EtcdAnswerError(LeaseStoreError):
    """etcd answered with an error status; `code` is its gRPC code when it gave one."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class _KeyValue:
    key: str
    value: bytes
    create_revision: int
    lease: int


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key after every key starting with `prefix` (etcd's range_end)."""
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return b"\x00"  # etcd: from the key to the end of the keyspace
    end[-1] += 1
    return bytes(end)


def _ttl_seconds(ttl: float) -> int:
    return max(1, math.ceil(ttl))


class EtcdLeaseStore(LeaseStore):
    #: etcd reports a lease's remaining TTL in whole seconds, rounded down.
    ttl_resolution = 1.0

    def __init__(self, endpoints: list[str], prefix: str = "/hadeck", timeout: float = 2.0) -> None:
        if not endpoints:
            raise ValueError("etcd lease store: at least one endpoint is needed")
        self.endpoints = [
            (e if "://" in e else f"http://{e}").rstrip("/") for e in endpoints if e.strip()
        ]
        self.prefix = prefix.rstrip("/")
        self.timeout = timeout
        self._preferred = 0  # index of the endpoint that answered last
        # Proxies from the environment are ignored: the lease store must reach etcd directly.
        # A connect attempt gets a share of the timeout, so one dead endpoint leaves time for
        # the next.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=timeout / len(self.endpoints)),
            trust_env=False,
        )
        #: (group, token) -> lease id of the acquisitions this object made.
        self._leases: dict[tuple[str, int], int] = {}
        #: (group, member) -> (lease id, requested TTL seconds) of published member records.
        self._member_leases: dict[tuple[str, str], tuple[int, int]] = {}

    # ---- keys -------------------------------------------------------------------------

    def _key(self, group: str, *parts: str) -> str:
        if not group or "/" in group:
            raise ValueError(f"etcd lease store: group name {group!r} must be non-empty, no '/'")
        return "/".join([self.prefix, group, *parts])

    def _leader_key(self, group: str) -> str:
        return self._key(group, "leader")

    # ---- transport ----------------------------------------------------------------------

    @asynccontextmanager
    async def _bounded(self, op: str) -> AsyncIterator[None]:
        """One public call: all its requests together finish within the store's timeout."""
        try:
            async with asyncio.timeout(self.timeout):
                yield
        except TimeoutError:
            raise LeaseStoreError(
                f"etcd {op}: no answer within {self.timeout:g}s from "
                f"{self.endpoints[self._preferred]}"
            ) from None

    async def _post(self, op: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        refused: list[str] = []
        n = len(self.endpoints)
        for i in range(n):
            index = (self._preferred + i) % n
            url = self.endpoints[index] + path
            try:
                resp = await self._client.post(url, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing was sent: safe to try the next endpoint.
                refused.append(f"{url}: {exc or type(exc).__name__}")
                continue
            except httpx.HTTPError as exc:
                raise LeaseStoreError(
                    f"etcd {op} at {url}: {type(exc).__name__}: {exc or 'no answer'}"
                ) from None
            self._preferred = index
            return self._decode(op, url, resp)
        raise LeaseStoreError(f"etcd {op}: cannot connect to any endpoint ({'; '.join(refused)})")

    @staticmethod
    def _decode(op: str, url: str, resp: httpx.Response) -> dict[str, Any]:
        text = resp.text
        if url.endswith("/v3/lease/keepalive"):
            # A streaming RPC: the gateway answers newline-delimited {"result": ...} objects.
            text = text.strip().split("\n", 1)[0]
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = None
        if resp.status_code != 200:
            message = data.get("message") or data.get("error") if isinstance(data, dict) else None
            code = data.get("code") if isinstance(data, dict) else None
            raise EtcdAnswerError(
                f"etcd {op} at {url}: HTTP {resp.status_code}: {message or text[:200]!r}",
                code if isinstance(code, int) else None,
            )
        if isinstance(data, dict) and url.endswith("/v3/lease/keepalive"):
            if isinstance(data.get("error"), dict):
                err = data["error"]
                code = err.get("code")
                raise EtcdAnswerError(
                    f"etcd {op} at {url}: {err.get('message') or err}",
                    code if isinstance(code, int) else None,
                )
            data = data.get("result")
        if not isinstance(data, dict):
            raise LeaseStoreError(f"etcd {op} at {url}: malformed answer {text[:200]!r}")
        return data

    @staticmethod
    def _int(op: str, data: dict[str, Any], name: str) -> int:
        """An int64 field: etcd's JSON spells them as strings and omits zeros."""
        value = data.get(name, 0)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise LeaseStoreError(f"etcd {op}: malformed {name} {value!r}") from None

    def _kvs(self, op: str, data: dict[str, Any]) -> list[_KeyValue]:
        out: list[_KeyValue] = []
        kvs = data.get("kvs", [])
        if not isinstance(kvs, list):
            raise LeaseStoreError(f"etcd {op}: malformed kvs {kvs!r}")
        for kv in kvs:
            try:
                key = base64.b64decode(kv["key"], validate=True).decode()
                value = base64.b64decode(kv.get("value", ""), validate=True)
            except (KeyError, TypeError, AttributeError, binascii.Error, UnicodeDecodeError):
                raise LeaseStoreError(f"etcd {op}: malformed key-value {kv!r}") from None
            out.append(
                _KeyValue(
                    key, value, self._int(op, kv, "create_revision"), self._int(op, kv, "lease")
                )
            )
        return out

    # ---- etcd operations ------------------------------------------------------------------

    async def _range(self, op: str, key: str, **options: Any) -> list[_KeyValue]:
        data = await self._post(op, "/v3/kv/range", {"key": _b64(key), **options})
        return self._kvs(op, data)

    async def _range_prefix(self, op: str, prefix: str, **options: Any) -> list[_KeyValue]:
        return await self._range(
            op, prefix, range_end=_b64(_prefix_end(prefix.encode())), **options
        )

    async def _get(self, op: str, key: str) -> _KeyValue | None:
        kvs = await self._range(op, key)
        return kvs[0] if kvs else None

    async def _put(self, op: str, key: str, value: str, lease: int = 0) -> None:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        await self._post(op, "/v3/kv/put", body)

    async def _grant(self, op: str, ttl: float) -> tuple[int, int]:
        """A new lease: (id, TTL etcd granted, which may exceed the request)."""
        data = await self._post(op, "/v3/lease/grant", {"TTL": str(_ttl_seconds(ttl))})
        if data.get("error"):
            raise LeaseStoreError(f"etcd {op}: lease grant refused: {data['error']}")
        lease_id, granted = self._int(op, data, "ID"), self._int(op, data, "TTL")
        if not lease_id or granted <= 0:
            raise LeaseStoreError(f"etcd {op}: malformed lease grant {data!r}")
        return lease_id, granted

    async def _keepalive(self, op: str, lease_id: int) -> int:
        """Reset the lease to its granted TTL; returns that TTL, 0 if the lease is gone."""
        data = await self._post(op, "/v3/lease/keepalive", {"ID": str(lease_id)})
        return self._int(op, data, "TTL")

    async def _revoke(self, op: str, lease_id: int) -> None:
        """Revoke a lease (deleting its keys); one that is already gone is fine."""
        try:
            await self._post(op, "/v3/lease/revoke", {"ID": str(lease_id)})
        except EtcdAnswerError as exc:
            if exc.code != GRPC_NOT_FOUND:
                raise

    async def _revoke_quietly(self, op: str, lease_id: int) -> None:
        """Revoke a lease nobody needs; if etcd cannot be told, it expires by itself."""
        with suppress(LeaseStoreError):
            await self._revoke(op, lease_id)

    def _member_of(self, op: str, kv: _KeyValue) -> str:
        try:
            member = json.loads(kv.value)["member"]
        except (ValueError, KeyError, TypeError):
            member = None
        if not isinstance(member, str):
            raise LeaseStoreError(f"etcd {op}: malformed leader value at {kv.key}: {kv.value!r}")
        return member

    # ---- LeaseStore ---------------------------------------------------------------------

    async def leader(self, group: str) -> Leader | None:
        key = self._leader_key(group)
        async with self._bounded("leader"):
            kv = await self._get("leader", key)
            if kv is None:
                return None
            member = self._member_of("leader", kv)
            ttl_left: float | None = None
            if kv.lease:
                try:
                    data = await self._post("leader", "/v3/lease/timetolive", {"ID": str(kv.lease)})
                except LeaseStoreError:
                    data = {}
                if data:
                    left = self._int("leader", data, "TTL")
                    if left < 0:
                        # The lease is gone, and etcd deleted the key with it.
                        return None
                    ttl_left = float(left)
            return Leader(group, member, kv.create_revision, ttl_left)

    async def acquire(self, group: str, member: str, ttl: float) -> Leader | None:
        key = _b64(self._leader_key(group))
        async with self._bounded("acquire"):
            lease_id, granted = await self._grant("acquire", ttl)
            # Create-if-absent, and read back the creation revision: the fencing token.
            txn = {
                "compare": [
                    {"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
                ],
                "success": [
                    {
                        "request_put": {
                            "key": key,
                            "value": _b64(json.dumps({"member": member})),
                            "lease": str(lease_id),
                        }
                    },
                    {"request_range": {"key": key}},
                ],
            }
            try:
                data = await self._post("acquire", "/v3/kv/txn", txn)
            except LeaseStoreError:
                await self._revoke_quietly("acquire", lease_id)
                raise
            if not data.get("succeeded"):
                await self._revoke_quietly("acquire", lease_id)
                return None
            try:
                kvs = self._kvs("acquire", data["responses"][1]["response_range"])
            except (KeyError, IndexError, TypeError):
                kvs = []
            if not kvs or kvs[0].lease != lease_id:
                raise LeaseStoreError(f"etcd acquire: malformed transaction answer {data!r}")
            token = kvs[0].create_revision
            self._leases[(group, token)] = lease_id
            return Leader(group, member, token, float(granted))

    async def renew(self, leader: Leader, ttl: float) -> bool:
        lease_id = self._leases.get((leader.group, leader.token))
        if lease_id is None:
            return False
        key = self._leader_key(leader.group)
        async with self._bounded("renew"):
            alive = await self._keepalive("renew", lease_id) > 0
            kv = await self._get("renew", key) if alive else None
            ours = (
                kv is not None
                and kv.create_revision == leader.token
                and kv.lease == lease_id
                and self._member_of("renew", kv) == leader.member
            )
            if not ours:
                del self._leases[(leader.group, leader.token)]
                if alive:
                    await self._revoke_quietly("renew", lease_id)
            return ours

    async def release(self, leader: Leader) -> bool:
        key = _b64(self._leader_key(leader.group))
        async with self._bounded("release"):
            txn = {
                "compare": [
                    {
                        "key": key,
                        "target": "CREATE",
                        "result": "EQUAL",
                        "create_revision": str(leader.token),
                    }
                ],
                "success": [{"request_delete_range": {"key": key}}],
            }
            data = await self._post("release", "/v3/kv/txn", txn)
            deleted = False
            if data.get("succeeded"):
                try:
                    answer = data["responses"][0]["response_delete_range"]
                except (KeyError, IndexError, TypeError):
                    raise LeaseStoreError(
                        f"etcd release: malformed transaction answer {data!r}"
                    ) from None
                deleted = self._int("release", answer, "deleted") == 1
            lease_id = self._leases.pop((leader.group, leader.token), None)
            if lease_id is not None:
                # The key is gone already; the lease would only run out by itself.
                await self._revoke_quietly("release", lease_id)
            return deleted

    async def publish(self, group: str, record: MemberRecord, ttl: float) -> None:
        key = self._key(group, "members", record.member)
        wanted = _ttl_seconds(ttl)
        async with self._bounded("publish"):
            held = self._member_leases.get((group, record.member))
            lease_id = 0
            if (
                held is not None
                and held[1] == wanted
                and await self._keepalive("publish", held[0]) > 0
            ):
                lease_id = held[0]
            if not lease_id:
                lease_id, _ = await self._grant("publish", ttl)
                self._member_leases[(group, record.member)] = (lease_id, wanted)
            try:
                await self._put("publish", key, record.to_json(), lease_id)
            except EtcdAnswerError as exc:
                if exc.code != GRPC_NOT_FOUND:
                    raise
                # The lease expired between keepalive and put: start a new one.
                lease_id, _ = await self._grant("publish", ttl)
                self._member_leases[(group, record.member)] = (lease_id, wanted)
                await self._put("publish", key, record.to_json(), lease_id)
            if held is not None and held[0] != lease_id:
                # The TTL changed: the key now hangs on the new lease.
                await self._revoke_quietly("publish", held[0])

    async def members(self, group: str) -> list[MemberRecord]:
        async with self._bounded("members"):
            kvs = await self._range_prefix("members", self._key(group, "members", ""))
        out = []
        for kv in kvs:
            try:
                out.append(MemberRecord.from_json(kv.value))
            except (ValueError, TypeError) as exc:
                raise LeaseStoreError(
                    f"etcd members: malformed member record at {kv.key}: {exc}"
                ) from None
        return sorted(out, key=lambda r: r.member)

    async def get_flag(self, group: str, name: str) -> str | None:
        async with self._bounded("get_flag"):
            kv = await self._get("get_flag", self._key(group, "flags", name))
        if kv is None:
            return None
        try:
            return kv.value.decode()
        except UnicodeDecodeError:
            raise LeaseStoreError(f"etcd get_flag: {kv.key} is not UTF-8") from None

    async def set_flag(self, group: str, name: str, value: str | None) -> None:
        key = self._key(group, "flags", name)
        async with self._bounded("set_flag"):
            if value is None:
                await self._post("set_flag", "/v3/kv/deleterange", {"key": _b64(key)})
            else:
                await self._put("set_flag", key, value)

    async def add_history(self, entry: Handover) -> None:
        # The token orders keys for people reading etcd; the random suffix keeps two entries
        # with one token (a retried write, a forced failover) from overwriting each other.
        key = self._key(entry.group, "history", f"{entry.token:020d}-{secrets.token_hex(4)}")
        async with self._bounded("add_history"):
            await self._put("add_history", key, entry.to_json())

    async def history(self, group: str, limit: int = 50) -> list[Handover]:
        if limit <= 0:
            return []
        async with self._bounded("history"):
            # Newest first by the order of writing (create revision), as etcd sorts it.
            kvs = await self._range_prefix(
                "history",
                self._key(group, "history", ""),
                sort_target="CREATE",
                sort_order="DESCEND",
                limit=str(limit),
            )
        out = []
        for kv in kvs:
            try:
                out.append(Handover.from_json(kv.value))
            except (ValueError, TypeError) as exc:
                raise LeaseStoreError(f"etcd history: malformed entry at {kv.key}: {exc}") from None
        return out

    async def close(self) -> None:
        await self._client.aclose()
