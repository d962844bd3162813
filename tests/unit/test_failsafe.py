"""Failsafe mode's rules without a network: when a member accepts a heartbeat, what the
topology flag may hold, and the secret an agent refuses to start without."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent import clock
from agent.config import validate
from agent.failover.failsafe import (
    Promise,
    PromiseFile,
    encode_topology,
    parse_topology,
    proof,
    refusal,
)
from agent.failover.lease import Leader
from agent.failover.subsystem import failsafe_secrets
from agent.subsystem import ReloadError


def accepts(leader: Leader | None, holds: bool = False, sender: str = "m1", token: int = 7) -> bool:
    return (
        refusal(member="m2", sender=sender, token=token, holds_or_takes=holds, leader=leader)
        is None
    )


def test_a_standby_accepts_the_holder_it_last_saw_or_a_key_it_saw_vanish() -> None:
    assert accepts(Leader("pg", "m1", 7, 2.0))
    assert accepts(None)  # the key expired in the store: that is what it promises about


def test_a_heartbeat_is_refused_against_another_acquisition_or_its_own_lease() -> None:
    assert not accepts(Leader("pg", "m3", 8, 9.0))  # someone else took the key
    assert not accepts(Leader("pg", "m1", 8, 9.0))  # a newer acquisition than the sender's
    assert not accepts(None, holds=True)  # it holds or is taking the key itself
    assert not accepts(None, sender="m2")  # from itself


def test_the_topology_flag_reads_back_and_garbage_is_no_topology() -> None:
    topo = {"m1": "10.0.0.1:9441", "m2": None}
    assert parse_topology(encode_topology(topo)) == topo
    assert parse_topology('{"m1": "", "m2": 5}') == {"m1": None, "m2": None}
    for text in (None, "", "not json", "[1, 2]", '"m1"'):
        assert parse_topology(text) is None, text


def config(tmp_path: Path, secret: str | None) -> object:
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "pg.secret"
    if secret is not None:
        path.write_text(secret + "\n")
    return validate(
        {
            "api": {"public_listen": "127.0.0.1:9441"},
            "probes": {"w": {"kind": "tcp", "host": "h", "port": 1}},
            "services": {"db": {"probes": ["w"]}},
            "groups": {
                "pg": {
                    "service": "db",
                    "address": "10.0.0.1:9441",
                    "hooks": {
                        "promote": {"command": ["p"]},
                        "demote": {"command": ["d"], "timeout": "1s"},
                    },
                    "loop_wait": "1s",
                    "failsafe": {"secret": {"file": str(path)}},
                }
            },
        },
        str(tmp_path / "agent.yaml"),
    )


def test_an_agent_reads_each_groups_secret_at_start_or_names_the_field(tmp_path: Path) -> None:
    assert failsafe_secrets(config(tmp_path, "s" * 24)) == {"pg": "s" * 24}  # type: ignore[arg-type]
    for secret, why in (
        (None, "cannot read it"),
        ("short", "shorter than 16 characters"),
        ("s" * 20 + " s", "only printable ASCII"),
        ("s" * 20 + "é", "only printable ASCII"),
    ):
        with pytest.raises(ReloadError) as err:
            where = tmp_path / str(abs(hash(secret)))
            failsafe_secrets(config(where, secret))  # type: ignore[arg-type]
        (problem,) = err.value.problems
        assert problem.startswith("groups.pg.failsafe.secret: " + why), problem


def test_a_promise_outlives_a_restart_within_the_same_boot(tmp_path: Path) -> None:
    f = PromiseFile(tmp_path / "failsafe-pg.json", ttl=10.0)
    assert f.load() is None  # none given yet
    given = Promise("m1", 7, clock.now() + 5.0)
    asyncio.run(f.save(given))
    assert PromiseFile(f.path, 10.0).load() == given
    asyncio.run(f.save(Promise("m1", 7, clock.now() - 1.0)))
    assert f.load() is None  # it ran out before this start


def test_a_promise_from_another_boot_or_unreadable_binds_a_whole_ttl_from_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = PromiseFile(tmp_path / "failsafe-pg.json", ttl=10.0)
    asyncio.run(f.save(Promise("m1", 7, clock.now() + 1.0)))
    monkeypatch.setattr(clock, "boot_id", lambda: "another-boot")
    after = f.load()
    assert after is not None and after.holder == "m1" and after.left() > 9.0
    f.path.write_text("{not json")
    unreadable = f.load()
    assert unreadable is not None and unreadable.left() > 9.0


def test_a_promise_the_disk_refuses_raises(tmp_path: Path) -> None:
    f = PromiseFile(tmp_path / "missing-dir" / "failsafe-pg.json", ttl=10.0)
    with pytest.raises(OSError):
        asyncio.run(f.save(Promise("m1", 7, clock.now() + 5.0)))


def test_an_acknowledgement_is_signed_for_one_member_one_heartbeat() -> None:
    signed = proof("s" * 24, "pg", "m2", "m1", 7, "ab" * 8)
    assert signed == proof("s" * 24, "pg", "m2", "m1", 7, "ab" * 8)
    for other in (
        proof("s" * 24, "pg", "m3", "m1", 7, "ab" * 8),  # another member
        proof("s" * 24, "pg", "m2", "m1", 8, "ab" * 8),  # another lease
        proof("s" * 24, "pg", "m2", "m1", 7, "cd" * 8),  # another round
        proof("t" * 24, "pg", "m2", "m1", 7, "ab" * 8),  # another secret
    ):
        assert other != signed
