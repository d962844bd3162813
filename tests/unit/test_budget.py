"""Recovery pacing: backoff grows and is capped; never more attempts than the budget allows."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.config import Backoff, RecoveryPolicy
from agent.recovery.budget import AttemptBudget, backoff_delay, step_for


def policy(**kw) -> RecoveryPolicy:
    return RecoveryPolicy(**kw)


def test_first_attempt_is_immediate_then_exponential_and_capped():
    p = policy(backoff=Backoff(initial=1, max=10, multiplier=2))
    assert [backoff_delay(p, n) for n in range(1, 8)] == [0, 1, 2, 4, 8, 10, 10]


@given(
    initial=st.floats(0.001, 100),
    cap=st.floats(0.001, 1000),
    mult=st.floats(1, 10),
    n=st.integers(1, 200),
)
def test_backoff_never_shrinks_and_never_exceeds_its_cap(initial, cap, mult, n):
    p = policy(backoff=Backoff(initial=initial, max=cap, multiplier=mult))
    assert backoff_delay(p, n) <= max(cap, 0)
    assert backoff_delay(p, n + 1) >= backoff_delay(p, n) or backoff_delay(p, n + 1) == cap


def test_ladder_steps_in_order_then_the_last_repeats():
    p = policy(steps=["restart", "deep-clean"])
    assert [step_for(p, n) for n in range(1, 5)] == [
        "restart",
        "deep-clean",
        "deep-clean",
        "deep-clean",
    ]


@given(
    max_attempts=st.integers(1, 10),
    window=st.floats(1, 1000),
    gaps=st.lists(st.floats(0, 300), max_size=60),
)
def test_never_more_than_max_attempts_within_any_window(max_attempts, window, gaps):
    budget = AttemptBudget(max_attempts, window)
    now, taken = 0.0, []
    for gap in gaps:
        now += gap
        if budget.allows(now):
            budget.record(now)
            taken.append(now)
        else:
            assert budget.frees_at(now) > now
    for t in taken:
        assert len([u for u in taken if t <= u < t + window]) <= max_attempts


def test_budget_frees_when_the_oldest_attempt_leaves_the_window():
    budget = AttemptBudget(2, 100.0, [10.0, 50.0])
    assert not budget.allows(60.0)
    assert budget.frees_at(60.0) == 110.0
    assert budget.allows(110.5)
