"""A real single-member `etcd` on loopback, for tests of the etcd lease store and failover.

It listens on 127.0.0.1 with a free client port and a free peer port, keeps its data
in a temporary directory, and can be stopped (SIGTERM), killed (SIGKILL), frozen
(SIGSTOP) and started again on the same ports with the same data, which is how
tests make the lease store go away and come back. It never touches a system etcd:
Debian's etcd-server package may run one on the default ports 2379/2380, which
these never use, and ETCD_* variables from the environment are not passed on.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from console.demo.component import Component, free_port, http_ok
from tests.support.components import missing

ETCD = Path("/usr/bin/etcd")
PACKAGE = "etcd-server"


def require_etcd() -> None:
    """Skip (or, under CI=true, fail) when etcd is not installed."""
    if not ETCD.exists():
        missing(str(ETCD), PACKAGE)


@dataclass
class EtcdServer:
    """One `etcd` child process; `start()` after `stop()`/`kill()` brings the same member back."""

    dir: Path
    name: str = "hadeck-test"
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.component = Component(
            "etcd",
            self.argv(),
            self.log_path,
            http_ok(f"{self.url}/health", lambda r: r.json().get("health") == "true"),
            env={k: v for k, v in os.environ.items() if not k.startswith("ETCD")},
            start_timeout=20,
        )

    @property
    def url(self) -> str:
        """The client URL, as EtcdLeaseStore takes it in its endpoint list."""
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        return self.dir / "etcd.log"

    def argv(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            str(ETCD),
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.url,
            "--advertise-client-urls",
            self.url,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"{self.name}={peer}",
            "--initial-cluster-state",
            "new",
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ]

    def start(self, timeout: float = 20) -> EtcdServer:
        if not self.running:
            self.component.start(timeout)
        return self

    @property
    def running(self) -> bool:
        return self.component.running

    def log(self) -> str:
        return self.component.log()

    def stop(self) -> None:
        """A clean shutdown: SIGTERM (thawed first), SIGKILL if it has not exited in 10 s."""
        self.component.stop(10)

    def kill(self) -> None:
        """A crash: SIGKILL, no chance to flush anything."""
        self.component.kill()

    def freeze(self) -> None:
        """A hang: the ports stay open and accept connections, but nothing answers."""
        self.component.freeze()

    def thaw(self) -> None:
        self.component.thaw()

    def remove(self) -> None:
        """Stop it and delete its data."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
