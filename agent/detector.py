"""Failure detection without flapping: HAProxy-style fall/rise counts plus flap detection.

A probe is declared `down` after `fall` consecutive failures and `up` after
`rise` consecutive successes; one odd result never changes its state. At start
it is `unknown` until one of those happens. A probe whose state changes more
than `changes` times within `window` seconds is `flapping`: automatic recovery
is held for it, and it stops flapping once it has kept one state for a whole
window. Pure logic, driven by the caller's clock, so it can be tested exactly.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum


class State(StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"
    UNAVAILABLE = "unavailable"  # the probe cannot run on this host; never triggers recovery


@dataclass(frozen=True)
class Sample:
    ts: float
    ok: bool
    latency: float
    detail: str
    available: bool = True


@dataclass(frozen=True)
class Change:
    """What one observation changed; evidence is the samples that decided it."""

    state_from: State | None = None
    state_to: State | None = None
    flapping: bool | None = None  # True: started flapping, False: stopped
    evidence: tuple[Sample, ...] = ()


@dataclass
class FailureDetector:
    fall: int
    rise: int
    flap_window: float
    flap_changes: int
    state: State = State.UNKNOWN
    since: float | None = None
    flapping: bool = False
    successes: int = 0
    failures: int = 0
    history: deque[Sample] = field(default_factory=lambda: deque(maxlen=32))
    _changes: deque[float] = field(default_factory=deque)

    def observe(self, sample: Sample) -> Change | None:
        """Feed one result; returns what changed, or None."""
        self.history.append(sample)
        if not sample.available:
            self.successes = self.failures = 0
            if self.state is State.UNAVAILABLE:
                return None
            return self._move(State.UNAVAILABLE, sample.ts, (sample,))
        if sample.ok:
            self.successes += 1
            self.failures = 0
            if self.state is not State.UP and self.successes >= self.rise:
                return self._move(State.UP, sample.ts, self._last(self.rise))
        else:
            self.failures += 1
            self.successes = 0
            if self.state is not State.DOWN and self.failures >= self.fall:
                return self._move(State.DOWN, sample.ts, self._last(self.fall))
        return self._flap_check(sample.ts, ())

    def _last(self, n: int) -> tuple[Sample, ...]:
        return tuple(list(self.history)[-n:])

    def _move(self, to: State, now: float, evidence: tuple[Sample, ...]) -> Change:
        before = self.state
        self.state, self.since = to, now
        # Leaving `unknown` is learning the state, not a change of it; it does not count as a flap.
        if before in (State.UP, State.DOWN) and to in (State.UP, State.DOWN):
            self._changes.append(now)
        change = self._flap_check(now, evidence)
        flapping = change.flapping if change else None
        return Change(before, to, flapping, evidence)

    def _flap_check(self, now: float, evidence: tuple[Sample, ...]) -> Change | None:
        while self._changes and self._changes[0] <= now - self.flap_window:
            self._changes.popleft()
        if not self.flapping and len(self._changes) >= self.flap_changes:
            self.flapping = True
            return Change(flapping=True, evidence=evidence or self._last(self.flap_changes))
        if self.flapping and not self._changes:
            self.flapping = False
            return Change(flapping=False, evidence=evidence or self._last(1))
        return None
