"""An HA group of real agents on loopback, and a checker that fails on two primaries.

Each member is a real `hadeck-agent` with its own demo service (the group's
service) and hooks that write the member's role, with its fencing token, to a
file. The checker asks every member's public `/groups/<g>/primary` at the same
moment, every 50 ms, for the whole scenario; any round with two 200s is a
split brain.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.agent import AgentProcess, DemoService, http_probe
from tests.support.wait import wait_for

GROUP = "pg"


def member_config(
    name: str,
    d: Path,
    service: DemoService,
    store: dict[str, Any],
    *,
    priority: int = 100,
    ttl: str = "3s",
    loop_wait: str = "500ms",
    recovery: bool = False,
    fence: bool | list[str] = False,
    watchdog: Path | None = None,
    haproxy: list[dict[str, Any]] | None = None,
    address: str | None = None,
    failsafe: Path | None = None,
) -> dict[str, Any]:
    """`fence=True`: a fence hook that writes `fenced <wall time>` to the role file (or the
    argv given); `watchdog`: the device path (tests/support/watchdog.py's stand-in);
    `failsafe`: the group's secret file, failsafe mode on (it needs `address`)."""
    role = d / "role"
    svc: dict[str, Any] = {"probes": ["db"]}
    if recovery:
        svc["restart"] = {"command": service.start_argv(), "timeout": "10s"}
        svc["recovery"] = {"steps": ["restart"], "verify_window": "2s", "max_attempts": 2}
    hooks: dict[str, Any] = {
        "promote": {
            "command": ["sh", "-c", f'echo "primary $HADECK_FENCING_TOKEN" > {role}'],
            "timeout": "5s",
        },
        # Inside the margin check-config demands: demote ends within loop_wait.
        "demote": {"command": ["sh", "-c", f"echo standby > {role}"], "timeout": loop_wait},
    }
    if fence:
        argv = (
            fence
            if isinstance(fence, list)
            else ["sh", "-c", f'echo "fenced $(date +%s.%N)" > {role}']
        )
        hooks["fence"] = {"command": argv, "timeout": loop_wait}
    group: dict[str, Any] = {
        "member": name,
        "priority": priority,
        "service": "db",
        "ttl": ttl,
        "loop_wait": loop_wait,
        "hooks": hooks,
    }
    if watchdog is not None:
        group["watchdog"] = {"device": str(watchdog)}
    if haproxy:
        group["haproxy"] = haproxy
    if address is not None:
        group["address"] = address
    if failsafe is not None:
        group["failsafe"] = {"secret": {"file": str(failsafe)}}
    return {
        "agent": {"name": name},
        "lease_store": store,
        "probes": {"db": http_probe(service, interval="250ms", timeout="200ms", fall=2, rise=1)},
        "services": {"db": svc},
        "groups": {GROUP: group},
    }


@dataclass
class Member:
    name: str
    agent: AgentProcess
    service: DemoService | None

    @property
    def role_file(self) -> Path:
        return self.agent.dir / "role"

    def primary(self, timeout: float = 0.5, client: httpx.Client | None = None) -> bool:
        url = f"{self.agent.public_url}/groups/{GROUP}/primary"
        try:
            r = (client or httpx).get(url, timeout=timeout)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def status(self) -> dict[str, Any]:
        return dict(self.agent.get(f"/api/v1/groups/{GROUP}"))


Timeline = Sequence[tuple[float, str | None]]


def primary_again(timeline: Timeline) -> list[tuple[float, str]]:
    """The moments a member answered as primary again after another member had been primary
    after it: a primary that was replaced and came back. Moments with no primary (a
    handover, a poll that timed out) do not count as a replacement."""
    replaced: set[str] = set()
    last: str | None = None
    again = []
    for at, name in timeline:
        if name is None:
            continue
        if name in replaced:
            again.append((at, name))
        if last is not None and name != last:
            replaced.add(last)
        last = name
    return again


@dataclass
class SplitBrainChecker:
    """Polls every member's primary endpoint in parallel every `period` seconds."""

    members: list[Member]
    period: float = 0.05
    rounds: int = 0
    split: list[tuple[float, list[str]]] = field(default_factory=list)
    #: (time, the one primary or None) each time the answer changed, for the failure message.
    timeline: list[tuple[float, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=len(self.members))
        self._thread = threading.Thread(target=self._run, daemon=True)
        # One client per member, each used by one request at a time: a round costs three
        # requests, not three new clients (an SSL context each) that made a 50 ms period
        # into several hundred on a loaded machine.
        self._clients = {m.name: httpx.Client(trust_env=False) for m in self.members}

    def __enter__(self) -> SplitBrainChecker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for client in self._clients.values():
            client.close()
        assert not self.split, f"two primaries at once: {self.split[:5]}; timeline {self.timeline}"

    def current(self) -> str | None:
        return self.timeline[-1][1] if self.timeline else None

    def _ask(self, m: Member) -> tuple[str, bool]:
        return m.name, m.primary(0.3, self._clients[m.name])

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            answers = list(self._pool.map(self._ask, self.members))
            primaries = [name for name, yes in answers if yes]
            now = time.time()
            self.rounds += 1
            if len(primaries) > 1:
                self.split.append((now, primaries))
            one = primaries[0] if primaries else None
            if not self.timeline or self.timeline[-1][1] != one:
                self.timeline.append((now, one))
            self._stop.wait(max(0.0, self.period - (time.monotonic() - started)))


Start = Callable[..., list[Member]]


def new_primary(members: list[Member], old: Member, timeout: float = 15) -> Member:
    def other() -> Member | None:
        p = one_primary(members)
        return p if p is not None and p is not old else None

    return wait_for(other, timeout, f"a primary other than {old.name}")


def one_primary(members: list[Member]) -> Member | None:
    primaries = [m for m in members if m.primary()]
    return primaries[0] if len(primaries) == 1 else None
