"""Failsafe mode with real agents and a real etcd: the primary keeps its role through a
store outage or a partition from the store while every other member acknowledges it,
and never beside a second primary.

Each member reaches etcd through its own black-hole proxy, and the others reach its
public listener (its `address`, where heartbeats arrive) through another, so the
primary can be cut from the store, from one member, or both. The split-brain checker
asks every member every 50 ms for the whole scenario.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.failover.failsafe import proof
from tests.support.etcd import EtcdServer
from tests.support.groups import GROUP, Member, SplitBrainChecker, Start, new_primary, one_primary
from tests.support.proxy import BlackHoleProxy
from tests.support.wait import wait_for

TTL = 3.0  # the group fixture's default: ttl 3 s, loop_wait 0.5 s


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "failsafe.secret"
    path.write_text(secrets.token_urlsafe(24) + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def proxies() -> Iterator[Callable[[], BlackHoleProxy]]:
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(BlackHoleProxy(0))


def failsafe_group(
    group: Start,
    etcd: EtcdServer,
    secret: Path,
    proxies: Callable[[], BlackHoleProxy],
    n: int = 3,
    **kw: Any,
) -> tuple[list[Member], list[BlackHoleProxy], list[BlackHoleProxy]]:
    """Members in failsafe mode, each with its own path to etcd and its own address."""
    store = [proxies() for _ in range(n)]
    api = [proxies() for _ in range(n)]
    for p in store:
        p.upstream_port = etcd.client_port
    members = group(
        n,
        each=[
            {
                "store": {"kind": "etcd", "endpoints": [s.url], "timeout": "1s"},
                "address": f"127.0.0.1:{a.port}",
            }
            for s, a in zip(store, api, strict=True)
        ],
        failsafe=secret,
        **kw,
    )
    for a, m in zip(api, members, strict=True):
        a.upstream_port = m.agent.public_port
    return members, store, api


def ready(first: Member, others: list[Member], gone: Member | None = None) -> None:
    """The primary has written the topology with every other member in it (and without
    `gone`, whose record has expired)."""
    names = [m.name for m in others]

    def covered() -> bool:
        state = first.status().get("failsafe") or ""
        listed = all(n in state for n in names) and (gone is None or gone.name not in state)
        return state.startswith("on:") and listed

    wait_for(covered, 15, f"{first.name}'s failsafe topology to list exactly {names}")


def holds(member: Member, seconds: float) -> None:
    """`member` answers as primary for `seconds`, every time it is asked."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert member.primary(1.0), f"{member.name} stopped answering as primary"
        time.sleep(0.1)


def promoted(members: list[Member], since: float) -> list[str]:
    return [
        m.name for m in members if any(e["ts"] > since for e in m.agent.events("group_promoted"))
    ]


@pytest.mark.parametrize("store", ["etcd"], indirect=True)
def test_failsafe_keeps_the_primary_through_an_etcd_outage(
    group: Start, etcd: EtcdServer, secret: Path, proxies: Callable[[], BlackHoleProxy]
) -> None:
    """Without failsafe mode the same outage demotes the primary within ttl
    (test_failover's etcd-outage test): here it serves all along."""
    members, _, _ = failsafe_group(group, etcd, secret, proxies)
    with SplitBrainChecker(members):
        first = wait_for(lambda: one_primary(members), 20, "a primary")
        others = [m for m in members if m is not first]
        ready(first, others)
        stopped = time.time()
        etcd.stop()
        active = first.agent.wait_event("group_failsafe_active", 10)
        assert sorted(active["evidence"]["members"]) == sorted(m.name for m in others)
        for m in others:
            assert (
                m.agent.wait_event("group_failsafe_promised", 10)["evidence"]["holder"]
                == first.name
            )
        holds(first, 2 * TTL)  # well past the ttl - loop_wait at which it would step down
        assert "failsafe" in (first.status()["failsafe"] or ""), first.status()["failsafe"]
        assert not [e for e in first.agent.events("group_demoted") if e["ts"] > stopped]
        etcd.start()
        ended = first.agent.wait_event("group_failsafe_ended", 20)
        assert ended["evidence"]["lasted"] >= 2 * TTL, ended
        for m in members:
            wait_for(lambda m=m: m.status()["leader"] == first.name, 15, f"{m.name} sees it")
        assert one_primary(members) is first
        assert promoted(members, stopped) == []


@pytest.mark.parametrize("store", ["etcd"], indirect=True)
def test_failsafe_under_a_partition_holds_only_while_every_member_acknowledges(
    group: Start, etcd: EtcdServer, secret: Path, proxies: Callable[[], BlackHoleProxy]
) -> None:
    """The primary cut from etcd while the standbys still reach it: they see its key
    expire and, having promised, take nothing. A member that left the topology (stopped
    before the partition) and comes back takes nothing either. Then one standby stops
    hearing the primary: its acknowledgements end, the primary steps down at its
    deadline, and a standby takes over only after that."""
    members, store, api = failsafe_group(group, etcd, secret, proxies)
    with SplitBrainChecker(members):
        first = wait_for(lambda: one_primary(members), 20, "a primary")
        second, third = [m for m in members if m is not first]
        third.agent.stop()
        ready(first, [second], gone=third)  # its record expired: the topology is the two
        cut = time.time()
        store[members.index(first)].cut()
        first.agent.wait_event("group_failsafe_active", 10)
        assert (
            second.agent.wait_event("group_failsafe_promised", 10)["evidence"]["holder"]
            == first.name
        )
        third.agent.start()
        # Both reach etcd and see the key gone once it expires; neither takes it.
        wait_for(lambda: second.status()["leader"] is None, 10, "the key to expire")
        wait_for(
            lambda: "not in the failsafe topology" in (third.status()["failsafe"] or ""),
            15,
            f"{third.name} to see it is not in the topology",
        )
        holds(first, 2 * TTL)
        assert promoted(members, cut) == []
        assert "promised" in (second.status()["failsafe"] or "")

        # The primary can no longer reach the second member: no more acknowledgements.
        api[members.index(second)].cut()
        refused = first.agent.wait_event("group_failsafe_refused", 10)
        assert second.name in refused["evidence"]["refused"], refused
        demoted = first.agent.wait_event("group_demoted", 10)
        assert "could not be renewed" in demoted["message"]
        assert second.name in demoted["evidence"]["failsafe"], demoted
        successor = new_primary(members, first, 30)
        assert successor is second  # the third is still outside the topology
        won = successor.agent.wait_event("group_promoted")
        assert won["ts"] >= demoted["ts"], (won["ts"], demoted["ts"])
        api[members.index(second)].heal()
        store[members.index(first)].heal()
        wait_for(lambda: first.status()["leader"] == successor.name, 15, "old primary sees it")
        assert first.role_file.read_text().strip() == "standby"


@pytest.mark.parametrize("store", ["etcd"], indirect=True)
def test_a_standby_restarted_during_failsafe_keeps_the_promise_its_last_run_gave(
    group: Start, etcd: EtcdServer, secret: Path, proxies: Callable[[], BlackHoleProxy]
) -> None:
    """The standby that acknowledged the cut-off primary restarts while the key is still in
    etcd, and the primary can no longer reach it. The key expires while the primary's
    deadline (from the standby's last acknowledgement) still runs: a standby that forgot
    its promise would take the key at once, beside the primary. loop_wait 1 s, so that
    a standby on etcd may take an expired key at once (docs/failover.md)."""
    ttl = 10.0
    members, store, api = failsafe_group(
        group, etcd, secret, proxies, n=2, ttl="10s", loop_wait="1s"
    )
    with SplitBrainChecker(members):
        first = wait_for(lambda: one_primary(members), 20, "a primary")
        (second,) = [m for m in members if m is not first]
        ready(first, [second])
        cut = time.monotonic()
        store[members.index(first)].cut()
        first.agent.wait_event("group_failsafe_active", 10)
        # Acknowledged rounds until the primary's deadline outlasts the key it renewed last
        # (before the cut, so gone by cut + ttl); then the standby restarts out of its reach.

        def outlasts_the_key() -> bool:
            left = first.status()["valid_for"]
            return left is not None and time.monotonic() + left > cut + ttl + 1.0

        wait_for(outlasts_the_key, 10, f"{first.name}'s deadline past its key's expiry")
        api[members.index(second)].cut()
        second.agent.stop()
        second.agent.start()
        # Back while the key is still there (the case the promise file is for).
        wait_for(lambda: second.status()["leader"] == first.name, 4, "the key seen again")
        assert "promised" in (second.status()["failsafe"] or ""), second.status()["failsafe"]
        demoted = first.agent.wait_event("group_demoted", 3 * ttl)
        successor = new_primary(members, first, 3 * ttl)
        assert successor is second
        won = second.agent.wait_event("group_promoted")
        assert won["ts"] >= demoted["ts"], (won["ts"], demoted["ts"])
        api[members.index(second)].heal()
        store[members.index(first)].heal()


@pytest.mark.parametrize("store", ["etcd"], indirect=True)
def test_a_heartbeat_needs_the_secret_and_is_refused_against_the_store(
    group: Start, etcd: EtcdServer, secret: Path, proxies: Callable[[], BlackHoleProxy]
) -> None:
    members, _, _ = failsafe_group(group, etcd, secret, proxies, n=2)
    first = wait_for(lambda: one_primary(members), 20, "a primary")
    (other,) = [m for m in members if m is not first]
    wait_for(lambda: other.status()["leader"] == first.name, 10, "the standby sees the primary")
    token = other.status()["token"]
    url = f"{other.agent.public_url}/groups/{GROUP}/failsafe"
    auth = {"Authorization": f"Bearer {secret.read_text().strip()}"}

    nonce = "0123456789abcdef0123456789abcdef"

    def post(params: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
        full = {"to": other.name, "nonce": nonce, **params}
        return httpx.post(url, params=full, headers=headers or {}, timeout=5, trust_env=False)

    ok = {"member": first.name, "token": token}
    assert post(ok).status_code == 401
    assert post(ok, {"Authorization": "Bearer " + "x" * 32}).status_code == 401
    r = post({"member": first.name, "token": token + 1}, auth)
    assert r.status_code == 409 and "held by" in r.json()["error"], r.text
    r = post({"member": other.name, "token": token}, auth)
    assert r.status_code == 409, r.text
    r = post({"member": "../x", "token": token}, auth)
    assert r.status_code == 422, r.text
    r = post({**ok, "to": first.name}, auth)  # meant for another member (a copied address)
    assert r.status_code == 409 and f"this is {other.name}" in r.json()["error"], r.text
    # The primary refuses any heartbeat: it holds the lease itself.
    r = httpx.post(
        f"{first.agent.public_url}/groups/{GROUP}/failsafe",
        params={"member": other.name, "token": token, "to": first.name, "nonce": nonce},
        headers=auth,
        timeout=5,
        trust_env=False,
    )
    assert r.status_code == 409 and "holds" in r.json()["error"], r.text
    r = post(ok, auth)
    assert r.status_code == 200 and r.json()["accepted"] is True, r.text
    signed = proof(secret.read_text().strip(), GROUP, other.name, first.name, token, nonce)
    assert r.json()["proof"] == signed
    assert "promised" in (other.status()["failsafe"] or "")
    promised = other.agent.wait_event("group_failsafe_promised")["evidence"]
    assert (promised["holder"], promised["token"]) == (first.name, token)
