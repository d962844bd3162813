"""What a capability of the agent is to the daemon: a subsystem, and what all of them share.

Probes and recovery, HA groups, host resources, and next backups and releases
each own their config sections, their scheduled jobs, their API routers and
their start / stop / reload; they share one `Core` (one event path, one store,
one audit log, one metrics registry, one scheduler). `agent/daemon.py` is the
wiring over the list of them.

A reload is two phases so that it is applied whole or not at all: `prepare`
builds everything the new config needs (every check constructed, every job's
trigger computed) without touching what runs, and may fail with a
`ReloadError`; only when every subsystem prepared does the daemon call each
`Prepared.apply`, which stops the old and starts the new and does not fail on
account of the config.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from agent import cron
from agent.audit import AuditLog
from agent.config import AgentConfig, Schedule
from agent.events import EventLog
from agent.journal import Journal
from agent.metrics import Metrics
from agent.operations import Operations
from agent.store import Store

if TYPE_CHECKING:
    from fastapi import APIRouter

    from agent.scheduler import LoopScheduler

log = logging.getLogger("hadeck.agent")


@dataclass(frozen=True)
class Core:
    """What every subsystem shares; built once per agent process, kept across reloads."""

    config_path: Path
    events: EventLog
    store: Store
    audit: AuditLog
    metrics: Metrics
    scheduler: LoopScheduler
    operations: Operations
    journal: Journal


class ReloadError(Exception):
    """The new config cannot be applied; each problem names the field and what is wrong."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Timing:
    """When a job runs: its trigger, made and checked, and its first run."""

    trigger: Any  # an APScheduler trigger
    first_run: datetime

    @classmethod
    def of(
        cls, where: str, trigger: Callable[[], Any], first_run: Callable[[], datetime]
    ) -> Timing:
        """Raise ReloadError naming `where` when the trigger cannot be made or would never
        fire (a period too large for the calendar, say): found while preparing, not after
        the old job was removed."""
        try:
            made, start = trigger(), first_run()
            if made.get_next_fire_time(None, datetime.now(UTC)) is None:
                raise ValueError("it would never run")
        except (OverflowError, ValueError, TypeError) as exc:
            raise ReloadError([f"{where}: cannot be scheduled: {exc}"]) from None
        return cls(made, start)


def scheduled(where: str, schedule: Schedule) -> Timing:
    """The timing of a configured schedule; a recorded job's first run is the trigger's."""
    from agent.scheduler import every, in_seconds

    if schedule.cron is not None:
        expr = schedule.cron
        return Timing.of(
            where,
            lambda: cron.trigger(expr),
            lambda: cron.trigger(expr).get_next_fire_time(None, datetime.now(UTC)),
        )
    seconds = schedule.every or 0.0
    return Timing.of(where, lambda: every(seconds), lambda: in_seconds(seconds))


@dataclass(frozen=True)
class Job:
    """One scheduled job of a subsystem; its id is unique within the subsystem.

    A `recorded` job keeps its last run and last success in the store (agent/job_runs.py):
    what a backup or a check schedule needs to say when it last worked. With `catch_up`,
    a run that fell due while the agent was down (or failed before a restart) is made up
    once at start, and a `job_missed` event says how many fires were missed."""

    id: str
    func: Callable[[], Awaitable[Any]]
    timing: Timing
    options: dict[str, Any] = field(default_factory=dict)
    recorded: bool = False
    catch_up: bool = False


class JobSet:
    """A subsystem's jobs on the shared scheduler: only it adds, replaces or removes them."""

    def __init__(self, scheduler: LoopScheduler, owner: str, events: EventLog) -> None:
        self.scheduler, self.owner, self.events = scheduler, owner, events
        self._ids: set[str] = set()
        self._placed: set[str] = set()  # ever added by this process

    def replace(self, jobs: Sequence[Job]) -> None:
        self.clear()
        for job in jobs:
            job_id = f"{self.owner}:{job.id}"
            if job.recorded:
                # Catch-up is for what fell due while the agent was down: at start, not at
                # every reload.
                catch_up = job.catch_up and job_id not in self._placed
                missed = self.scheduler.add_recorded_job(
                    job_id, job.func, job.timing.trigger, catch_up=catch_up, **job.options
                )
                if missed is not None:
                    self.events.emit(
                        "job_missed",
                        "warning",
                        f"job {job_id} missed {missed.fires} run(s) since "
                        f"{missed.due.isoformat(timespec='seconds')}: running it now",
                        evidence={
                            "job": job_id,
                            "fires": missed.fires,
                            "due": missed.due.timestamp(),
                            "last_success": missed.last_success,
                        },
                    )
            else:
                self.scheduler.add_job(
                    job.func,
                    job.timing.trigger,
                    id=job_id,
                    next_run_time=job.timing.first_run,
                    **job.options,
                )
            self._ids.add(job_id)
            self._placed.add(job_id)

    def clear(self) -> None:
        for job_id in self._ids:
            self.scheduler.remove_job(job_id)
        self._ids.clear()


class Prepared(Protocol):
    """A subsystem's new config, built and checked, ready to replace the running one."""

    #: What the reload changes, for the `config_reloaded` event's evidence (e.g. probes added).
    summary: dict[str, Any]

    @property
    def headline(self) -> str:
        """The same in a few words for its message ("probes +1 -0 ~2"); empty says nothing."""
        ...

    async def apply(self) -> None: ...


@dataclass
class Unchanged:
    summary: dict[str, Any] = field(default_factory=dict)
    headline: str = ""

    async def apply(self) -> None:
        return None


class Subsystem:
    """One capability. Subclasses set `name` and `sections` and override what they use."""

    name: ClassVar[str]
    #: The top-level config sections this subsystem reads.
    sections: ClassVar[tuple[str, ...]]
    #: Sections whose changes take effect only after a restart of the agent.
    restart_sections: ClassVar[tuple[str, ...]] = ()

    def __init__(self, core: Core, cfg: AgentConfig) -> None:
        self.core, self.config = core, cfg

    def routers(self) -> Sequence[APIRouter]:
        """Routers for the loopback API."""
        return ()

    def public_routers(self) -> Sequence[APIRouter]:
        """Read-only routers that may also face the network (routing checks)."""
        return ()

    def start(self) -> None:
        """Schedule the jobs and start the tasks of the config given at construction."""

    async def stop(self) -> None:
        """End every task and job; the shared core stays open."""

    def prepare(self, new: AgentConfig) -> Prepared:
        """Build what `new` needs without touching what runs; ReloadError if it cannot be."""
        return Unchanged()

    def changed(self, new: AgentConfig) -> bool:
        return any(getattr(new, s) != getattr(self.config, s) for s in self.sections)


@dataclass(frozen=True)
class OptionalSubsystem:
    """A capability that runs only where the config asks for it (HA groups; next backups
    and releases): its module is imported only then, so a host without it pays nothing.

    `module` defines `build(core, cfg, running)`, where `running` maps the name of each
    subsystem built before it to the subsystem (HA groups follow supervision's services).
    Its `sections` changing while it is not running take effect with the next start."""

    name: str
    module: str
    sections: tuple[str, ...]
    wanted: Callable[[AgentConfig], bool]

    def build(self, core: Core, cfg: AgentConfig, running: Mapping[str, Subsystem]) -> Subsystem:
        sub: Subsystem = importlib.import_module(self.module).build(core, cfg, running)
        return sub
