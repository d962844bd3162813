"""The failover tests' check that a replaced primary never comes back (tests/support/groups.py),
on timelines as the split-brain checker records them: (time, the one primary or None)."""

from __future__ import annotations

from tests.support.groups import primary_again


def test_a_primary_that_comes_back_after_its_successor_is_caught() -> None:
    flapping = [(1.0, "m1"), (2.0, "m2"), (3.0, "m1"), (4.0, "m2")]
    assert primary_again(flapping) == [(3.0, "m1"), (4.0, "m2")]


def test_a_gap_with_no_primary_is_not_a_replacement() -> None:
    # m1 missed a poll (a slow answer on a loaded machine), then was frozen and replaced.
    assert primary_again([(1.0, "m1"), (1.1, None), (1.2, "m1"), (2.0, None), (5.0, "m2")]) == []


def test_coming_back_after_a_gap_and_a_third_member_is_caught() -> None:
    timeline = [(1.0, "m1"), (2.0, None), (3.0, "m2"), (4.0, "m3"), (5.0, None), (6.0, "m1")]
    assert primary_again(timeline) == [(6.0, "m1")]


def test_one_handover_and_no_primary_at_all_pass() -> None:
    assert primary_again([(1.0, "m1"), (2.0, None), (3.0, "m2")]) == []
    assert primary_again([]) == []
    assert primary_again([(1.0, None)]) == []
