"""A real HAProxy on loopback, configured like deploy/haproxy/haproxy.cfg.

It runs in the foreground (`haproxy -db`) as a child of the test, on 127.0.0.1 and free
ports, with its config and its admin stats socket in a temporary directory: for each
backend, a TCP frontend that clients connect to and servers checked with an HTTP GET of the
backend's check path on each server's check port, with the example's check timings. The
Debian package may also have installed a system HAProxy; nothing here uses it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.haproxy import HaproxyError, HaproxyRuntime
from console.demo.component import Component, Readiness, free_port
from tests.support.components import missing

HAPROXY = Path("/usr/sbin/haproxy")
PACKAGE = "haproxy"
# The example's timings (deploy/haproxy/haproxy.cfg); the tests measure failover with them.
CHECK_TIMINGS = "inter 500ms fastinter 250ms downinter 500ms fall 2 rise 1"
# sun_path is 108 bytes on Linux; pytest's tmp_path can be longer than that.
_MAX_SOCKET_PATH = 100


def require_haproxy() -> None:
    """Skip (or, under CI=true, fail) when HAProxy is not installed."""
    if not HAPROXY.exists():
        missing(str(HAPROXY), PACKAGE)


@dataclass(frozen=True)
class Server:
    """A backend server: clients are sent to `port`, HAProxy checks `check_port`."""

    name: str
    port: int
    check_port: int


@dataclass(frozen=True)
class Backend:
    """A backend and the TCP frontend on `port` that routes clients to it."""

    name: str
    check_path: str
    servers: Sequence[Server]
    port: int = field(default_factory=free_port)
    check_timings: str = CHECK_TIMINGS


@dataclass
class HaproxyProcess:
    """One `haproxy -db` child process; `runtime` talks to its admin socket."""

    dir: Path
    backends: Sequence[Backend]

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._socket_dir: Path | None = None
        socket_path = self.dir / "admin.sock"
        if len(str(socket_path)) > _MAX_SOCKET_PATH:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="hadeck-haproxy-"))
            socket_path = self._socket_dir / "admin.sock"
        self.socket_path = socket_path
        self.runtime = HaproxyRuntime(socket_path, timeout=2.0)
        self.config_path = self.dir / "haproxy.cfg"
        self.config_path.write_text(self._config())
        self.component = Component(
            "haproxy",
            [str(HAPROXY), "-db", "-f", str(self.config_path)],
            self.log_path,
            Readiness(f"haproxy to answer `show info` on {socket_path}", self._answering),
            start_timeout=10,
        )

    @property
    def log_path(self) -> Path:
        return self.dir / "haproxy.log"

    def backend(self, name: str) -> Backend:
        return next(b for b in self.backends if b.name == name)

    def _config(self) -> str:
        lines = [
            "global",
            f"    stats socket {self.socket_path} mode 600 level admin",
            "    maxconn 200",
            "",
            "defaults",
            "    mode tcp",
            "    timeout connect 2s",
            "    timeout client 30s",
            "    timeout server 30s",
            "    timeout check 500ms",
            "",
        ]
        for b in self.backends:
            lines += [
                f"frontend {b.name}_in",
                f"    bind 127.0.0.1:{b.port}",
                f"    default_backend {b.name}",
                "",
                f"backend {b.name}",
                "    balance roundrobin",
                f"    option httpchk GET {b.check_path}",
                "    http-check expect status 200",
                f"    default-server {b.check_timings} on-marked-down shutdown-sessions",
                *(
                    f"    server {s.name} 127.0.0.1:{s.port} check port {s.check_port}"
                    for s in b.servers
                ),
                "",
            ]
        return "\n".join(lines)

    def start(self) -> HaproxyProcess:
        self.component.start()
        return self

    def _answering(self, _: Component) -> bool:
        try:
            return self.runtime.command("show info").startswith("Name: HAProxy")
        except HaproxyError:
            return False

    def log(self) -> str:
        return self.component.log()

    def stop(self) -> None:
        """SIGTERM: HAProxy's hard stop, which closes open sessions at once (SIGUSR1, the
        soft stop, would wait for every client to leave)."""
        try:
            self.component.stop(10)
        finally:
            if self._socket_dir is not None:
                shutil.rmtree(self._socket_dir, ignore_errors=True)
