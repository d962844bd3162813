"""The running agent: one event loop, one scheduler, one store, one audit log, two listeners.

SIGHUP reloads the config (validated first; on error the agent keeps running
on the old one and says why). SIGTERM and SIGINT stop it cleanly: scheduling
stops, running commands' process groups are ended, listeners close, and the
store is closed after the last write.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import random
import secrets
import signal
import time
from functools import partial
from pathlib import Path

from agent import __version__, commands, config, resources
from agent.actions import Actions
from agent.api.app import build_api, build_public
from agent.api.server import StartupError, bind, server_for
from agent.audit import AuditLog
from agent.blocking import Blocking, StillBlocked
from agent.config import AgentConfig, ConfigError, Group
from agent.detector import State
from agent.events import EventLog
from agent.failover.lease import LeaseStore
from agent.failover.lease_sqlite import SqliteLeaseStore
from agent.failover.member import GroupMember, ServiceHealth
from agent.failover.operations import GroupOperations
from agent.journal import Journal
from agent.metrics import Metrics
from agent.scheduler import LoopScheduler, every, in_seconds
from agent.schema import Resources
from agent.store import Store
from agent.supervisor import Supervisor

log = logging.getLogger("hadeck.agent")


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


def open_lease_store(cfg: AgentConfig) -> LeaseStore:
    ls = cfg.lease_store
    if ls.kind == "etcd":
        from agent.failover.lease_etcd import EtcdLeaseStore

        return EtcdLeaseStore(ls.endpoints, ls.prefix, ls.timeout)
    return SqliteLeaseStore(ls.path or cfg.agent.state_dir / "leases.db", ls.timeout)


def failover_after(cfg: AgentConfig, group: Group) -> float:
    """Default: at once without local recovery, else after one pass of the recovery ladder."""
    if group.failover_after is not None:
        return group.failover_after
    recovery = cfg.services[group.service].recovery
    return 0.0 if recovery is None else len(recovery.steps) * recovery.verify_window


class Agent:
    def __init__(self, cfg: AgentConfig, config_path: Path) -> None:
        self.config, self.config_path = cfg, config_path
        self.started_at = self.config_loaded_at = time.time()
        self.resources: Resources = resources.EMPTY
        self._sampling = Blocking()
        self._stop = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------

    def _open(self) -> None:
        cfg = self.config
        try:
            cfg.agent.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
            self.store = Store(cfg.agent.state_dir / "state.db")
            self.audit = AuditLog(cfg.audit_path)
        except OSError as exc:
            raise StartupError(f"cannot open the state directory: {exc}") from None
        self.token = load_token(cfg)
        self.metrics = Metrics()
        self.metrics.info.info({"version": __version__, "host": cfg.agent.name})
        self.metrics.start_time.set(self.started_at)
        self.events = EventLog(self.store, self.metrics)
        self.journal = Journal(self.audit, self.store, self.metrics, self.events)
        self.supervisor = Supervisor(cfg, self.events, self.store, self.metrics, self.journal)
        self.actions = Actions(self.supervisor, self.journal)
        self.lease_store = open_lease_store(cfg) if cfg.groups else None
        self.groups: dict[str, GroupMember] = {}
        if self.lease_store is not None:
            for name, group in cfg.groups.items():
                self.groups[name] = GroupMember(
                    name,
                    group,
                    group.member or cfg.agent.name,
                    self.lease_store,
                    self.events,
                    self.audit,
                    partial(self.service_health, group.service),
                    failover_after(cfg, group),
                    self.metrics,
                )
        self.group_ops = GroupOperations(self.groups, self.events, self.journal)
        self.supervisor.listeners.append(self._service_changed)

    def _service_changed(self, service: str) -> None:
        for member in self.groups.values():
            if member.cfg.service == service:
                member.poke()

    def service_health(self, service: str) -> ServiceHealth:
        """What an HA group member needs to know about its service, read from the supervisor."""
        svc = self.supervisor.services.get(service)
        if svc is None:
            return ServiceHealth(False, None, "not in the config", None)
        probes = self.supervisor.probes
        failing = [
            f"{p}: {probes[p].detector.history[-1].detail}"
            for p in svc.cfg.probes
            if probes[p].state is State.DOWN and probes[p].detector.history
        ]
        return ServiceHealth(
            up=svc.state is State.UP,
            down_since=svc.since if svc.state is State.DOWN else None,
            detail="; ".join(failing) or svc.state.value,
            recovery=svc.ladder.state if svc.ladder is not None else None,
        )

    async def run(self) -> None:
        commands.watch_children_with_pidfds()
        self._open()
        sockets, apps = [bind(self.config.api.listen)], [build_api(self)]
        if self.config.api.public_listen:
            sockets.append(bind(self.config.api.public_listen))
            apps.append(build_public(self))
        servers = [server_for(app) for app in apps]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))

        self.scheduler = LoopScheduler(event_loop=loop)
        self.scheduler.start()
        self._schedule_probes()
        self.scheduler.add_job(
            self._sample_resources,
            every(self.config.resources.interval),
            id="resources",
            next_run_time=in_seconds(0),
            max_instances=1,
            coalesce=True,
        )
        self.scheduler.add_job(
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
        self.supervisor.start()
        for member in self.groups.values():
            member.start()
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
            self.scheduler.shutdown(wait=False)
            # A primary hands over before its service's supervision stops.
            await asyncio.gather(*(m.stop() for m in self.groups.values()))
            if self.lease_store is not None:
                await self.lease_store.close()
            await self.supervisor.stop()
            await commands.end_all()
            for s in servers:
                s.exit()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.events.emit("agent_stopped", "info", "hadeck-agent stopped")
            self.store.close()
            self.audit.close()

    def stop(self) -> None:
        self._stop.set()

    # -- scheduled work ------------------------------------------------------

    def _schedule_probes(self) -> None:
        for name, runner in self.supervisor.probes.items():
            cfg = runner.cfg
            self.scheduler.add_job(
                runner.run,
                every(cfg.interval, cfg.jitter),
                id=f"probe:{name}",
                next_run_time=in_seconds(random.uniform(0, cfg.jitter)),  # noqa: S311
                # The tick can bring a run up to 250 ms closer to the previous one, which
                # may still be going when its timeout is close to the interval: that run
                # waits for it (the runner's lock) instead of being skipped. One at most.
                max_instances=2,
                coalesce=True,
                misfire_grace_time=max(1, int(cfg.interval)),
            )

    async def _sample_resources(self) -> None:
        interval = self.config.resources.interval
        try:
            # Below the interval: a hung sample must end before the next run falls due.
            async with asyncio.timeout(interval / 2):
                sample = await self._sampling.call(
                    partial(resources.sample, self.config.resources.mounts)
                )
        except TimeoutError:
            log.warning("host resources: no sample within %gs (a hung mount?)", interval / 2)
            return
        except StillBlocked as exc:
            log.warning("host resources: %s", exc)
            return
        self.resources = sample
        m = self.metrics
        m.cpu.set(sample.cpu_ratio or 0.0)
        m.load1.set(sample.load1 or 0.0)
        m.mem_used.set(sample.memory_used_bytes or 0)
        m.mem_total.set(sample.memory_total_bytes or 0)
        for d in sample.disks:
            m.disk_free.labels(d.mount).set(d.free_bytes)
            m.disk_size.labels(d.mount).set(d.total_bytes)

    async def _prune(self) -> None:
        r = self.config.retention
        await asyncio.to_thread(
            self.store.prune, r.events, r.probe_results, r.max_events, r.max_probe_results
        )

    # -- reload --------------------------------------------------------------

    async def reload(self) -> None:
        try:
            new = await asyncio.to_thread(config.load, self.config_path)
        except ConfigError as exc:
            self.metrics.config_reloads.labels("rejected").inc()
            self.events.emit(
                "config_reload_rejected",
                "warning",
                f"reload of {self.config_path} rejected, still running the previous config: "
                f"{len(exc.problems)} problem(s)",
                evidence={"problems": [str(p) for p in exc.problems]},
            )
            for p in exc.problems:
                log.error("reload rejected: %s", p)
            return
        old = self.config
        needs_restart = [
            section
            for section in ("api", "agent", "audit", "groups", "lease_store")
            if getattr(new, section) != getattr(old, section)
        ]
        for job in self.scheduler.get_jobs():
            if job.id.startswith("probe:"):
                job.remove()
        previous = self.supervisor
        await previous.stop()
        self.metrics.clear_states()
        self.config = new
        self.supervisor = Supervisor(
            new, self.events, self.store, self.metrics, self.journal, previous=previous
        )
        self.actions.supervisor = self.supervisor
        self.supervisor.listeners.append(self._service_changed)
        self._schedule_probes()
        if new.resources.interval != old.resources.interval:
            self.scheduler.reschedule_job("resources", trigger=every(new.resources.interval))
            self.scheduler.modify_job("resources", next_run_time=in_seconds(0))
        self.supervisor.start()
        self.config_loaded_at = time.time()
        self.metrics.config_reloads.labels("applied").inc()
        added = sorted(set(new.probes) - set(old.probes))
        removed = sorted(set(old.probes) - set(new.probes))
        changed = sorted(
            n for n in set(new.probes) & set(old.probes) if new.probes[n] != old.probes[n]
        )
        self.events.emit(
            "config_reloaded",
            "info",
            f"config reloaded: probes +{len(added)} -{len(removed)} ~{len(changed)}"
            + (
                f"; {', '.join(needs_restart)} changes take effect after a restart"
                if needs_restart
                else ""
            ),
            evidence={
                "added": added,
                "removed": removed,
                "changed": changed,
                "needs_restart": needs_restart,
            },
        )
