"""When a standby may take a leader key that vanished: lease.certainly_free's three cases."""

from __future__ import annotations

from agent.failover.lease import Leader, Release, certainly_free

TTL, SAFETY = 10.0, 1.0


def free(left: float | None, released: Release | None = None, resolution: float = 0.0) -> float:
    seen = Leader("pg", "m1", 7, left)
    at, _ = certainly_free(seen, 100.0, 100.2, released, TTL, SAFETY, resolution)
    return at


def test_a_release_with_the_keys_token_frees_it_at_once() -> None:
    assert free(9.0, Release(7, "m1", 0.0)) == 100.2


def test_a_release_of_an_older_key_does_not_count() -> None:
    assert free(9.0, Release(6, "m1", 0.0)) == 110.0


def test_a_key_seen_about_to_expire_is_free_when_it_is_gone() -> None:
    assert free(0.3) == 100.2
    assert free(1.0) == 100.2  # exactly the margin: its holder's deadline has passed


def test_etcds_whole_seconds_count_against_the_margin() -> None:
    # "0 s left" in etcd means under a second: within a margin of 1 s, not of 0.5 s.
    assert free(0.0, resolution=1.0) == 100.2
    assert free(1.0, resolution=1.0) == 110.0


def test_a_key_with_time_left_waits_a_full_ttl_from_the_last_sight() -> None:
    assert free(8.0) == 110.0
    assert free(None) == 110.0  # time left unknown: assume the worst


def test_a_late_discovery_still_covers_a_renewal_just_before_the_vanish() -> None:
    seen = Leader("pg", "m1", 7, 9.0)
    at, why = certainly_free(seen, 100.0, 105.0, None, TTL, SAFETY, 0.0)
    assert at == 105.0 + TTL - SAFETY and "full ttl" in why
