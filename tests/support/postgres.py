"""Real PostgreSQL streaming replication on loopback, run the way the recipe expects.

One primary made by `initdb` and standbys made by `pg_basebackup`, each with its data
directory and, as on Debian, its configuration outside it (pg_rewind copies the primary's
data directory, configuration files in it included), all under one temporary directory on
free ports. PostgreSQL refuses to run as root: as root, every server and program runs as
the Debian package's `postgres` user, and the directory is theirs.

Each member's agent drives its server only through deploy/recipes/postgresql/hadeck-pg,
as a real host's would (`pg_member_config`).
"""

from __future__ import annotations

import bisect
import contextlib
import importlib.machinery
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg

from console.demo.component import free_port
from tests.support.components import missing

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "deploy" / "recipes" / "postgresql" / "hadeck-pg"
PACKAGE = "postgresql"


def load_recipe() -> ModuleType:
    """hadeck-pg as a module (it has no .py suffix), to call its functions directly."""
    loader = importlib.machinery.SourceFileLoader("hadeck_pg", str(RECIPE))
    spec = importlib.util.spec_from_loader("hadeck_pg", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hadeck_pg"] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module


def pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        missing("/usr/lib/postgresql/*/bin/initdb", PACKAGE)
    return found[-1].parent


def require_postgres() -> None:
    pg_bin()


def _owner() -> str | None:
    return "postgres" if os.geteuid() == 0 else None


class PgCluster:
    """`members` servers, the first the primary; `synchronous`: ANY 1 of the others must
    have flushed a commit before it is acknowledged."""

    def __init__(self, members: list[str], synchronous: bool = True) -> None:
        self.bin = pg_bin()
        self.members = members
        self.synchronous = synchronous
        # /tmp, not pytest's tmp_path: that is root's, mode 0700, and a unix socket's path
        # must stay short.
        self.dir = Path(tempfile.mkdtemp(prefix="hadeck-pg-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.ports = {m: free_port() for m in members}
        owner = _owner()
        if owner is not None:
            pw = pwd.getpwnam(owner)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    # -- paths ----------------------------------------------------------------------------

    def data(self, m: str) -> Path:
        return self.dir / m

    def conf_dir(self, m: str) -> Path:
        return self.dir / f"{m}.conf.d"

    def settings(self, m: str) -> Path:
        """The recipe's TOML for member `m`."""
        return self.dir / f"{m}.toml"

    def log(self, m: str) -> Path:
        return self.dir / f"postgresql-{m}.log"

    def recipe(self, m: str, command: str, timeout: float) -> list[str]:
        return [str(RECIPE), "--config", str(self.settings(m)), "--timeout", f"{timeout:g}",
                command]  # fmt: skip

    def dsn(self, m: str, **extra: Any) -> str:
        parts = {"host": "127.0.0.1", "port": self.ports[m], "user": "postgres",
                 "dbname": "postgres", "connect_timeout": 2, **extra}  # fmt: skip
        return " ".join(f"{k}={v}" for k, v in parts.items())

    # -- running --------------------------------------------------------------------------

    def run(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, user=_owner(), cwd="/"
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv}: exit {done.returncode}: {done.stderr or done.stdout}")
        return done

    def create(self) -> PgCluster:
        first, *rest = self.members
        self.run([str(self.bin / "initdb"), "-D", str(self.data(first)), "-U", "postgres",
                  "--auth=trust", "--data-checksums", "-E", "UTF8"])  # fmt: skip
        for m in self.members:
            self._write_conf(m)
        self.start(first)
        with self.connect(first) as conn:
            conn.execute("set synchronous_commit = local")  # no standby to wait for yet
            conn.execute("create table writes (n bigint primary key, at timestamptz)")
        for m in rest:
            self.run([str(self.bin / "pg_basebackup"), "-D", str(self.data(m)), "-d",
                      self.dsn(first), "-X", "stream", "-c", "fast"])  # fmt: skip
            self._as_standby_of(m, first)
            self.start(m)
        self._write_settings()
        return self

    def _write_conf(self, m: str) -> None:
        d = self.conf_dir(m)
        d.mkdir()
        names = ", ".join(self.members)
        lines = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.ports[m]}",
            f"unix_socket_directories = '{self.dir}'",
            f"hba_file = '{d / 'pg_hba.conf'}'",
            f"ident_file = '{d / 'pg_ident.conf'}'",
            "wal_level = replica",
            "max_wal_senders = 10",
            "wal_keep_size = 256MB",
            "hot_standby = on",
            "wal_log_hints = on",
            "max_connections = 40",
            "shared_buffers = 16MB",
            "wal_receiver_status_interval = 1s",
            "restart_after_crash = off",  # as the recipe's README asks
            "synchronous_commit = on",
            f"synchronous_standby_names = '{'ANY 1 (' + names + ')' if self.synchronous else ''}'",
        ]
        (d / "postgresql.conf").write_text("\n".join(lines) + "\n")
        (d / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
            "local replication all trust\nhost replication all 127.0.0.1/32 trust\n"
        )
        (d / "pg_ident.conf").write_text("")
        self._chown(d)

    def _as_standby_of(self, m: str, primary: str) -> None:
        data = self.data(m)
        (data / "standby.signal").write_text("")
        info = (f"host=127.0.0.1 port={self.ports[primary]} user=postgres "
                f"application_name={m}")  # fmt: skip
        with open(data / "postgresql.auto.conf", "a") as fh:
            fh.write(f"primary_conninfo = '{info}'\n")
        self._chown(data)

    def _write_settings(self) -> None:
        for m in self.members:
            servers = "\n".join(
                f'[members.{o}]\nhost = "127.0.0.1"\nport = {self.ports[o]}' for o in self.members
            )
            self.settings(m).write_text(
                f'member = "{m}"\n'
                f'data = "{self.data(m)}"\n'
                f'config_file = "{self.conf_dir(m) / "postgresql.conf"}"\n'
                f'bin = "{self.bin}"\n'
                f'log = "{self.log(m)}"\n'
                f"synchronous = {'true' if self.synchronous else 'false'}\n"
                "reclone = true\n"
                f"connect_timeout = 2\n\n{servers}\n"
            )

    def _chown(self, path: Path) -> None:
        owner = _owner()
        if owner is None:
            return
        pw = pwd.getpwnam(owner)
        for p in [path, *path.rglob("*")]:
            os.chown(p, pw.pw_uid, pw.pw_gid)

    def start(self, m: str) -> None:
        conf = self.conf_dir(m) / "postgresql.conf"
        self.run([str(self.bin / "pg_ctl"), "start", "-D", str(self.data(m)), "-w", "-t", "30",
                  "-l", str(self.log(m)), "-o", f"-c config_file={conf}"])  # fmt: skip

    def stop(self, m: str, mode: str = "immediate") -> None:
        subprocess.run(
            [str(self.bin / "pg_ctl"), "stop", "-D", str(self.data(m)), "-m", mode, "-w"],
            capture_output=True,
            timeout=30,
            user=_owner(),
            cwd="/",
        )

    def postmaster(self, m: str) -> int | None:
        try:
            return int((self.data(m) / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def processes(self, m: str) -> list[int]:
        """The postmaster and its children: what a crash of the server kills."""
        pid = self.postmaster(m)
        if pid is None:
            return []
        found = [pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry.name))
                except (OSError, IndexError, ValueError):
                    continue
        return found

    def crash(self, m: str) -> None:
        """SIGKILL to every process of the server at once (a postmaster killed alone leaves
        its backends serving their clients for a while)."""
        for pid in self.processes(m):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def destroy(self, keep_logs: Path | None = None) -> None:
        """Stops every server and removes the directory, its servers' logs kept in
        `keep_logs` (the test's tmp_path) to read after a failure."""
        for m in self.members:
            pid = self.postmaster(m)
            if pid is not None:
                # A test may have frozen it: thawed first, or it cannot stop.
                subprocess.run(["kill", "-CONT", str(pid)], capture_output=True)
            self.stop(m)
            if keep_logs is not None and self.log(m).exists():
                shutil.copy(self.log(m), keep_logs / self.log(m).name)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- reading --------------------------------------------------------------------------

    def connect(self, m: str, **kw: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn(m), autocommit=True, **kw)

    def writable(self, m: str) -> bool | None:
        """pg_is_in_recovery() read from the server itself; None when it does not answer."""
        try:
            with psycopg.connect(self.dsn(m, connect_timeout=1), autocommit=True) as conn:
                conn.execute("set statement_timeout = 500")
                row = conn.execute("select pg_is_in_recovery()").fetchone()
        except psycopg.Error:
            return None
        return row is not None and not row[0]

    def rows(self, m: str) -> set[int]:
        with self.connect(m) as conn:
            return {int(r[0]) for r in conn.execute("select n from writes").fetchall()}

    def streaming_to(self, m: str) -> list[tuple[str, str]]:
        """(application_name, sync_state) of the standbys streaming from `m`."""
        with self.connect(m) as conn:
            rows = conn.execute(
                "select application_name, sync_state from pg_stat_replication "
                "where state = 'streaming'"
            ).fetchall()
        return [(str(a), str(s)) for a, s in rows]


def pg_member_config(
    name: str,
    cluster: PgCluster,
    store: dict[str, Any],
    *,
    priority: int = 100,
    ttl: str = "10s",
    loop_wait: float = 2.0,
    max_lag: int = 0,
    recovery: bool = True,
) -> dict[str, Any]:
    """A member's agent config as deploy/recipes/postgresql/agent.yaml writes it."""
    r = cluster.recipe
    svc: dict[str, Any] = {"probes": ["pg"]}
    if recovery:
        svc["restart"] = {"command": r(name, "start", 20), "timeout": "25s"}
        svc["recovery"] = {"steps": ["restart"], "verify_window": "3s", "max_attempts": 3}
    return {
        "agent": {"name": name},
        "lease_store": store,
        "probes": {
            "pg": {
                "kind": "command",
                "command": r(name, "health", 1),
                "interval": "1s",
                "timeout": "1s",
                "fall": 2,
                "rise": 1,
            },
        },
        "services": {"db": svc},
        "groups": {
            "pg": {
                "member": name,
                "priority": priority,
                "service": "db",
                "ttl": ttl,
                "loop_wait": f"{loop_wait:g}s",
                # Failover at once: the recipe restarts a crashed primary as a standby.
                "failover_after": "0s",
                "hooks": {
                    "promote": {"command": r(name, "promote", 20), "timeout": "25s"},
                    "demote": {
                        "command": r(name, "demote", loop_wait * 0.9),
                        "timeout": f"{loop_wait:g}s",
                    },
                    "fence": {
                        "command": r(name, "fence", loop_wait * 0.9),
                        "timeout": f"{loop_wait:g}s",
                    },
                    "follow": {"command": r(name, "follow", 50), "timeout": "60s"},
                },
                "lag": {"command": r(name, "lag", 4), "timeout": "5s"},
                "max_lag": max_lag,
            }
        },
    }


@dataclass
class RoleChecker:
    """Reads every member's real role (pg_is_in_recovery()) every `period` seconds, in
    parallel: a round with two writable servers is a split brain of the database itself."""

    cluster: PgCluster
    period: float = 0.05
    double: list[tuple[float, list[str]]] = field(default_factory=list)
    #: Reads done per member (answered or not).
    reads: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._latest: dict[str, bool | None] = {}
        self._lock = threading.Lock()

    @property
    def rounds(self) -> int:
        """Rounds in which every member was read: a watcher that died counts none."""
        return min((self.reads.get(m, 0) for m in self.cluster.members), default=0)

    def _watch(self, m: str) -> None:
        # One connection per member, reopened when it breaks: a round costs a query, not a
        # connection, so 50 ms holds.
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            started = time.monotonic()
            writable: bool | None = None
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.cluster.dsn(m, connect_timeout=1), autocommit=True)
                    conn.execute("set statement_timeout = 300")
                row = conn.execute("select pg_is_in_recovery()").fetchone()
                writable = row is not None and not row[0]
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                self._latest[m] = writable
                self.reads[m] = self.reads.get(m, 0) + 1
            self._stop.wait(max(0.0, self.period - (time.monotonic() - started)))
        if conn is not None:
            conn.close()

    def _judge(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                writable = [m for m, w in self._latest.items() if w]
            if len(writable) > 1:
                self.double.append((time.time(), writable))
            self._stop.wait(self.period)

    def __enter__(self) -> RoleChecker:
        for m in self.cluster.members:
            t = threading.Thread(target=self._watch, args=(m,), name=f"watch {m}", daemon=True)
            t.start()
            self._threads.append(t)
        judge = threading.Thread(target=self._judge, name="judge", daemon=True)
        judge.start()
        self._threads.append(judge)
        return self

    def __exit__(self, *exc: object) -> None:
        dead = [t.name for t in self._threads if not t.is_alive()]
        self._stop.set()
        for t in self._threads:
            t.join(5)
        assert not self.double, f"two writable PostgreSQL servers: {self.double[:5]}"
        assert not dead, f"role watchers that died before the end: {dead}"


@dataclass
class Writer:
    """Writes numbered rows through `port` (HAProxy's frontend) as fast as one client can,
    and records each commit the server acknowledged: after a fault, every one must be on the
    new primary."""

    port: int
    acked: list[int] = field(default_factory=list)
    #: When each acknowledgement came (time.monotonic()), beside `acked`.
    acked_at: list[float] = field(default_factory=list)
    failed: int = 0
    #: When each failed attempt ended (time.monotonic()).
    failed_at: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._next = 0
        self._unreplicated = False

    def _notice(self, diag: psycopg.errors.Diagnostic) -> None:
        # statement_timeout ended the wait for a standby's flush: the server says the
        # transaction "has already committed locally, but might not have been replicated"
        # and the client sees success.
        if "synchronous replication" in (diag.message_primary or ""):
            self._unreplicated = True

    def _run(self) -> None:
        dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres connect_timeout=1"
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(dsn, autocommit=True)
                    conn.execute("set statement_timeout = 2000")
                    conn.add_notice_handler(self._notice)
                n = self._next
                self._next += 1  # a number is never reused, acknowledged or not
                self._unreplicated = False
                conn.execute("insert into writes values (%s, now())", (n,))
                if self._unreplicated:  # committed locally only: not acknowledged
                    raise psycopg.OperationalError("synchronous replication wait cancelled")
                self.acked_at.append(time.monotonic())
                self.acked.append(n)
            except psycopg.Error:
                self.failed += 1
                self.failed_at.append(time.monotonic())
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(0.05)
        if conn is not None:
            conn.close()

    def first_ack_after(self, t: float) -> float | None:
        """When the first commit after `t` (time.monotonic()) was acknowledged."""
        i = bisect.bisect_right(self.acked_at, t)
        return self.acked_at[i] if i < len(self.acked_at) else None

    def writable_again(self, t: float) -> float | None:
        """After a fault at `t`: when writes were acknowledged again after the first
        failure it caused (at once if none failed and writes go on)."""
        i = bisect.bisect_right(self.failed_at, t)
        if i < len(self.failed_at):
            return self.first_ack_after(self.failed_at[i])
        return None

    @contextlib.contextmanager
    def running(self) -> Iterator[Writer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(10)
