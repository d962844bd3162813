"""How often recovery may act: exponential backoff and an attempt budget per window.

Pure functions of the policy and the caller's clock, so the guarantees (never
more than `max_attempts` within any `window`, delays that grow and are capped)
can be checked exactly by property tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from agent.config import RecoveryPolicy


def backoff_delay(policy: RecoveryPolicy, attempt: int) -> float:
    """Delay before attempt number `attempt` (1-based) of one episode: the first is immediate."""
    if attempt <= 1:
        return 0.0
    b = policy.backoff
    return float(min(b.max, b.initial * b.multiplier ** (attempt - 2)))


def step_for(policy: RecoveryPolicy, attempt: int) -> str:
    """The ladder's step for attempt `attempt` (1-based); past the end, the last step repeats."""
    return policy.steps[min(attempt, len(policy.steps)) - 1]


@dataclass
class AttemptBudget:
    """Attempt times within the sliding window; survives agent restarts via the store."""

    max_attempts: int
    window: float
    times: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, policy: RecoveryPolicy, times: Iterable[float] = ()) -> AttemptBudget:
        return cls(policy.max_attempts, policy.window, sorted(times))

    def _prune(self, now: float) -> None:
        # `t + window > now`, the same sum frees_at returns: written as `t > now - window`,
        # float rounding could keep an attempt whose freeing time is already `now`.
        self.times = [t for t in self.times if t + self.window > now]

    def used(self, now: float) -> int:
        self._prune(now)
        return len(self.times)

    def allows(self, now: float) -> bool:
        return self.used(now) < self.max_attempts

    def record(self, now: float) -> None:
        self.times.append(now)

    def frees_at(self, now: float) -> float:
        """When the next attempt becomes allowed (now, if it already is)."""
        self._prune(now)
        if len(self.times) < self.max_attempts:
            return now
        return self.times[len(self.times) - self.max_attempts] + self.window
