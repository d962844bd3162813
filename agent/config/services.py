"""The `services` and `runbooks` sections: what a service is made of and how it recovers."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from agent.config.base import (
    CommandStep,
    Count,
    Issue,
    PositiveDuration,
    Strict,
    check_names,
    unknown,
)


class Runbook(Strict):
    description: str = ""
    steps: list[CommandStep] = Field(min_length=1)


class Backoff(Strict):
    initial: PositiveDuration = 5.0
    max: PositiveDuration = 300.0
    #: At most 10: `initial x multiplier^n` must stay a float for as many attempts as a
    #: window holds (the cap is `max`).
    multiplier: float = Field(default=2.0, ge=1.0, le=10.0)


class RecoveryPolicy(Strict):
    """An ordered ladder of steps; after each, the probes must come back within `verify_window`.

    A step is `restart` (the service's restart command) or the name of a runbook.
    Beyond the last step, the last one is repeated until the attempt budget
    (`max_attempts` within `window`) is spent; then the service is `gave_up`
    until it comes back by itself or the window frees an attempt.
    """

    steps: list[str] = Field(default_factory=lambda: ["restart"], min_length=1)
    verify_window: PositiveDuration = 30.0
    backoff: Backoff = Backoff()
    max_attempts: Count = Field(default=5, ge=1)
    window: PositiveDuration = 3600.0


class Service(Strict):
    probes: list[str] = Field(min_length=1)
    depends_on: list[str] = Field(default_factory=list)
    restart: CommandStep | None = None
    recovery: RecoveryPolicy | None = None


def references(
    services: dict[str, Service], runbooks: dict[str, Runbook], probes: dict[str, Any]
) -> list[Issue]:
    """Names, and what services point at: their probes, other services, runbooks."""
    problems = check_names("services", services) + check_names("runbooks", runbooks)
    if "restart" in runbooks:
        problems.append((("runbooks", "restart"), "'restart' is reserved for the restart step"))
    for sname, svc in services.items():
        for i, probe in enumerate(svc.probes):
            if probe not in probes:
                problems.append((("services", sname, "probes", i), unknown("probe", probe, probes)))
        for i, dep in enumerate(svc.depends_on):
            if dep not in services or dep == sname:
                problems.append(
                    (("services", sname, "depends_on", i), unknown("service", dep, services))
                )
        if svc.recovery is not None:
            for i, step in enumerate(svc.recovery.steps):
                where = ("services", sname, "recovery", "steps", i)
                if step == "restart":
                    if svc.restart is None:
                        problems.append((where, "step 'restart' needs the service's `restart`"))
                elif step not in runbooks:
                    problems.append((where, unknown("runbook", step, runbooks)))
    cycle = _find_cycle({n: s.depends_on for n, s in services.items()})
    if cycle:
        problems.append(
            (("services", cycle[0], "depends_on"), "dependency cycle: " + " -> ".join(cycle))
        )
    return problems


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """The first dependency cycle, as a path that ends where it starts; None if there is none.

    Depth-first without recursion: a chain of a thousand services would pass Python's
    recursion limit.
    """
    done: set[str] = set()
    for start in graph:
        if start in done:
            continue
        path, on_path = [start], {start}
        todo = [iter(graph[start])]
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                node = path.pop()
                on_path.discard(node)
                done.add(node)
                todo.pop()
                continue
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt in done or nxt not in graph:
                continue
            path.append(nxt)
            on_path.add(nxt)
            todo.append(iter(graph[nxt]))
    return None
