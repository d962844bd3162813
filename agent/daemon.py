"""The running agent: the wiring of its subsystems over one core.

One event loop, one scheduler, one store, one audit log, two listeners, and
the list of subsystems (agent/subsystem.py): supervision always, host
resources always, HA groups when configured (not even imported otherwise).

SIGHUP reloads the config transactionally: the new config is loaded and every
subsystem prepares it (every check built, every trigger made) before anything
running is touched; any failure keeps the old config running and says so (a
`config_reload_rejected` event, the reload metric, a log line naming the file,
the field and the problem). SIGTERM and SIGINT stop the agent cleanly:
scheduling stops, a primary hands over, running commands' process groups are
ended, listeners close, and the store is closed after the last write.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import secrets
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import __version__, commands, config
from agent.api.app import build_api, build_public, core_routers
from agent.api.server import StartupError, bind, server_for
from agent.audit import AuditLog
from agent.config import AgentConfig, ConfigError
from agent.events import EventLog
from agent.job_runs import JobRuns
from agent.journal import Journal
from agent.metrics import Metrics
from agent.operations import Operations
from agent.resources import HostResources
from agent.scheduler import LoopScheduler, every, in_seconds
from agent.schema import Resources
from agent.store import Store, StoreError
from agent.subsystem import Core, OptionalSubsystem, Prepared, ReloadError, Subsystem
from agent.supervision import Supervision

if TYPE_CHECKING:
    from agent.actions import Actions
    from agent.failover.member import GroupMember
    from agent.supervisor import Supervisor

log = logging.getLogger("hadeck.agent")

#: The capabilities that run only where configured, in start order after the ones that
#: always run (supervision, host resources).
OPTIONAL = (
    OptionalSubsystem(
        "groups", "agent.failover.subsystem", ("groups", "lease_store"), lambda c: bool(c.groups)
    ),
)


def load_token(cfg: AgentConfig) -> str:
    """The API token; the default file is made on first start (0640, group hadeck if it exists)."""
    source = cfg.token_source
    if cfg.api.token is None and source.file is not None and not source.file.exists():
        source.file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(source.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
        with contextlib.suppress(KeyError, PermissionError):
            os.chown(source.file, -1, grp.getgrnam("hadeck").gr_gid)
        log.info("created API token file %s (mode 0640)", source.file)
    try:
        token = config.read_secret(source)
    except (OSError, KeyError) as exc:
        raise StartupError(f"cannot read the API token: {exc}") from None
    if len(token) < 16:
        raise StartupError("the API token is shorter than 16 characters")
    return token


class Agent:
    def __init__(self, cfg: AgentConfig, config_path: Path) -> None:
        self.config, self.config_path = cfg, config_path
        self.started_at = self.config_loaded_at = time.time()
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()

    # -- the subsystems -------------------------------------------------------

    def _open(self, scheduler: LoopScheduler) -> None:
        cfg = self.config
        try:
            cfg.agent.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
            store = Store(cfg.agent.state_dir / "state.db")
            audit = AuditLog(cfg.audit_path)
        except OSError as exc:
            raise StartupError(f"cannot open the state directory: {exc}") from None
        self.token = load_token(cfg)
        metrics = Metrics()
        metrics.info.info({"version": __version__, "host": cfg.agent.name})
        metrics.start_time.set(self.started_at)
        events = EventLog(store, metrics)
        # Subsystems register their tables as they are built: a table a newer agent wrote,
        # or a migration that fails, stops the start with the file's name.
        try:
            scheduler.job_runs = JobRuns(store)  # recorded jobs: last run and success
            self.core = Core(
                self.config_path,
                events,
                store,
                audit,
                metrics,
                scheduler,
                Operations(store, events),
                Journal(audit, store, metrics, events),
            )
            self.supervision = Supervision(self.core, cfg)
            self.host = HostResources(self.core, cfg)
            self._running: dict[str, Subsystem] = {
                "probes": self.supervision,
                "resources": self.host,
            }
            for optional in OPTIONAL:
                if optional.wanted(cfg):
                    self._running[optional.name] = optional.build(self.core, cfg, self._running)
        except ReloadError as exc:
            raise StartupError(f"{self.config_path}: {'; '.join(exc.problems)}") from None
        except StoreError as exc:
            raise StartupError(f"cannot use the state database: {exc}") from None

    @property
    def subsystems(self) -> Sequence[Subsystem]:
        """In start order; they stop in reverse (a primary hands over before its service's
        supervision stops)."""
        return list(self._running.values())

    # What the API reads (agent/api/app.py's AgentView).
    @property
    def store(self) -> Store:
        return self.core.store

    @property
    def audit(self) -> AuditLog:
        return self.core.audit

    @property
    def metrics(self) -> Metrics:
        return self.core.metrics

    @property
    def events(self) -> EventLog:
        return self.core.events

    @property
    def operations(self) -> Operations:
        return self.core.operations

    @property
    def journal(self) -> Journal:
        return self.core.journal

    @property
    def supervisor(self) -> Supervisor:
        return self.supervision.supervisor

    @property
    def actions(self) -> Actions:
        return self.supervision.actions

    @property
    def resources(self) -> Resources:
        return self.host.latest

    @property
    def groups(self) -> dict[str, GroupMember]:
        ha = self._running.get("groups")
        members: dict[str, GroupMember] = getattr(ha, "members", {})
        return members

    # -- lifecycle -----------------------------------------------------------

    async def run(self) -> None:
        commands.watch_children_with_pidfds()
        loop = asyncio.get_running_loop()
        scheduler = LoopScheduler(event_loop=loop)
        self._open(scheduler)
        # Each subsystem brings its routes; one not configured brings none (and is not
        # imported): an agent without HA groups has no group routes at all.
        own = [r for s in self.subsystems for r in s.routers()]
        public = [r for s in self.subsystems for r in s.public_routers()]
        sockets, apps = [bind(self.config.api.listen)], [build_api(self, core_routers(self) + own)]
        if self.config.api.public_listen:
            sockets.append(bind(self.config.api.public_listen))
            apps.append(build_public(self, public))
        servers = [server_for(app) for app in apps]
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_soon)

        scheduler.start()
        scheduler.add_job(
            self._prune,
            every(600),
            id="prune",
            next_run_time=in_seconds(30),
            max_instances=1,
            coalesce=True,
        )
        tasks = [
            asyncio.create_task(s.serve(sockets=[sock]))
            for s, sock in zip(servers, sockets, strict=True)
        ]
        for sub in self.subsystems:
            sub.start()
        self.events.emit(
            "agent_started",
            "info",
            f"hadeck-agent {__version__} started on {self.config.agent.name}, "
            f"API on {self.config.api.listen}",
            evidence={"config": str(self.config_path), "pid": os.getpid()},
        )
        log.info(
            "listening on %s",
            ", ".join(s.getsockname()[0] + f":{s.getsockname()[1]}" for s in sockets),
        )
        try:
            await self._stop.wait()
        finally:
            log.info("stopping")
            await self.operations.stop()  # each is marked interrupted, with its id
            # Each subsystem removes its own jobs, so the scheduler stops after them (a
            # stopped APScheduler no longer finds a job to remove); one that fails to stop
            # must not leave the others running.
            for sub in reversed(self.subsystems):
                try:
                    await sub.stop()
                except Exception:
                    log.exception("stopping the %s subsystem failed", sub.name)
            scheduler.shutdown(wait=False)
            await commands.end_all()
            for s in servers:
                s.exit()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.events.emit("agent_stopped", "info", "hadeck-agent stopped")
            self.store.close()
            self.audit.close()

    def stop(self) -> None:
        self._stop.set()

    async def _prune(self) -> None:
        r = self.config.retention
        self.store.retain_history(r.events, r.max_events)
        await asyncio.to_thread(self.store.prune)

    # -- reload --------------------------------------------------------------

    def _reload_soon(self) -> None:
        self._reloading = asyncio.ensure_future(self.reload())

    async def reload(self) -> None:
        """Apply the config file whole, or keep the running one and say why. Reloads run
        one at a time: a second SIGHUP during one waits, then reads the file again."""
        async with self._reload_lock:
            await self._reload()

    async def _reload(self) -> None:
        try:
            new = await asyncio.to_thread(config.load, self.config_path)
            plans = self._prepare(new)
        except ConfigError as exc:
            self._rejected([str(p) for p in exc.problems])
            return
        except ReloadError as exc:
            self._rejected([f"{self.config_path}: {p}" for p in exc.problems])
            return
        except Exception as exc:  # whatever a file does to the parser is a rejection, said
            self._rejected([f"{self.config_path}: cannot be loaded: {type(exc).__name__}: {exc}"])
            return
        old = self.config
        restart_sections = {s for sub in self.subsystems for s in sub.restart_sections}
        for optional in OPTIONAL:  # one not running yet starts with the next start
            if optional.name not in self._running:
                restart_sections |= set(optional.sections)
        needs_restart = sorted(
            section
            for section in ("api", "agent", "audit", *sorted(restart_sections))
            if getattr(new, section) != getattr(old, section)
        )
        self.config = new
        summary: dict[str, Any] = {}
        for plan in plans:
            await plan.apply()
            summary.update(plan.summary)
        self.config_loaded_at = time.time()
        self.metrics.config_reloads.labels("applied").inc()
        headline = "; ".join(plan.headline for plan in plans if plan.headline) or "no change"
        self.events.emit(
            "config_reloaded",
            "info",
            f"config reloaded: {headline}"
            + (
                f"; {', '.join(needs_restart)} changes take effect after a restart"
                if needs_restart
                else ""
            ),
            evidence={**summary, "needs_restart": needs_restart},
        )

    def _prepare(self, new: AgentConfig) -> list[Prepared]:
        """Every running subsystem's plan for `new`, or the ReloadError of all that fail."""
        plans, problems = [], []
        for sub in self.subsystems:
            try:
                plans.append(sub.prepare(new))
            except ReloadError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ReloadError(problems)
        return plans

    def _rejected(self, problems: list[str]) -> None:
        self.metrics.config_reloads.labels("rejected").inc()
        for p in problems:
            log.error("reload of %s rejected: %s", self.config_path, p)
        self.events.emit(
            "config_reload_rejected",
            "warning",
            f"reload of {self.config_path} rejected, still running the previous config: "
            f"{len(problems)} problem(s)",
            evidence={"config": str(self.config_path), "problems": problems},
        )
