"""The failure detector: fall/rise counts, no state change from one odd result, flap detection."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.detector import FailureDetector, Sample, State


def detector(
    fall: int = 3, rise: int = 2, window: float = 60.0, changes: int = 4
) -> FailureDetector:
    return FailureDetector(fall=fall, rise=rise, flap_window=window, flap_changes=changes)


def feed(d: FailureDetector, results: list[bool], start: float = 0.0, step: float = 1.0):
    changes = []
    for i, ok in enumerate(results):
        change = d.observe(Sample(start + i * step, ok, 0.01, "ok" if ok else "boom"))
        if change is not None:
            changes.append(change)
    return changes


def test_down_only_after_fall_consecutive_failures_with_evidence():
    d = detector(fall=3, rise=2)
    feed(d, [True, True])
    assert d.state is State.UP
    assert feed(d, [False, False], start=2) == []
    assert d.state is State.UP
    (change,) = feed(d, [False], start=4)
    assert (change.state_from, change.state_to) == (State.UP, State.DOWN)
    assert [s.ok for s in change.evidence] == [False, False, False]
    assert [s.ts for s in change.evidence] == [2, 3, 4]


def test_one_success_between_failures_resets_the_count():
    d = detector(fall=2, rise=1)
    feed(d, [True, False, True, False, True, False])
    assert d.state is State.UP


def test_unknown_until_rise_or_fall_is_reached():
    d = detector(fall=3, rise=2)
    feed(d, [True])
    assert d.state is State.UNKNOWN
    feed(d, [True], start=1)
    assert d.state is State.UP


def test_unavailable_probe_is_neither_up_nor_down():
    d = detector()
    change = d.observe(Sample(0, False, 0, "no systemd", available=False))
    assert change is not None and change.state_to is State.UNAVAILABLE
    assert d.observe(Sample(1, False, 0, "no systemd", available=False)) is None


@settings(max_examples=300)
@given(
    fall=st.integers(1, 6),
    rise=st.integers(1, 6),
    results=st.lists(st.booleans(), max_size=80),
)
def test_state_is_always_justified_by_the_last_results(fall, rise, results):
    """Whatever the sequence: a DOWN state is entered only after `fall` failures in a row,
    an UP state only after `rise` successes in a row."""
    d = detector(fall=fall, rise=rise, changes=1000)
    history: list[bool] = []
    for i, ok in enumerate(results):
        history.append(ok)
        change = d.observe(Sample(float(i), ok, 0.0, ""))
        if change is not None and change.state_to is State.DOWN:
            assert history[-fall:] == [False] * fall
        if change is not None and change.state_to is State.UP:
            assert history[-rise:] == [True] * rise
        # And it never lags: after `fall` failures in a row it is down.
        if len(history) >= fall and history[-fall:] == [False] * fall:
            assert d.state is State.DOWN
        if len(history) >= rise and history[-rise:] == [True] * rise:
            assert d.state is State.UP


def test_flapping_is_raised_then_cleared_after_a_stable_window():
    d = detector(fall=1, rise=1, window=10.0, changes=4)
    changes = feed(d, [True, False, True, False, True], step=1.0)
    flaps = [c for c in changes if c.flapping is not None]
    assert [c.flapping for c in flaps] == [True]
    assert d.flapping
    # Stable (up) for more than the window: flapping ends.
    later = feed(d, [True] * 3, start=20.0, step=1.0)
    assert [c.flapping for c in later if c.flapping is not None] == [False]
    assert not d.flapping


def test_changes_spread_wider_than_the_window_are_not_flapping():
    d = detector(fall=1, rise=1, window=10.0, changes=4)
    feed(d, [True, False, True, False, True, False], step=6.0)
    assert not d.flapping


@given(st.lists(st.tuples(st.booleans(), st.floats(0.01, 30)), max_size=100))
def test_flapping_means_enough_changes_within_the_window(steps):
    window, needed = 60.0, 5
    d = detector(fall=1, rise=1, window=window, changes=needed)
    t, moves = 0.0, []
    for ok, gap in steps:
        t += gap
        change = d.observe(Sample(t, ok, 0.0, ""))
        if change and change.state_from in (State.UP, State.DOWN) and change.state_to is not None:
            moves.append(t)
        if change and change.flapping is True:
            assert len([m for m in moves if m > t - window]) >= needed
