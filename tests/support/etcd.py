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
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.agent import free_port
from tests.support.components import missing
from tests.support.wait import wait_for

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
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

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
        if self.running:
            return self
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        log.close()
        wait_for(self._healthy, timeout, f"etcd on {self.url} to report healthy")
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"etcd exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
        try:
            r = httpx.get(f"{self.url}/health", timeout=1, trust_env=False)
            return r.status_code == 200 and r.json().get("health") == "true"
        except (httpx.HTTPError, ValueError):
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """A clean shutdown: SIGTERM, then SIGKILL if etcd has not exited within 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)  # a frozen etcd cannot act on SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def kill(self) -> None:
        """A crash: SIGKILL, no chance to flush anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def freeze(self) -> None:
        """A hang: the ports stay open and accept connections, but nothing answers."""
        assert self.running and self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.running and self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def remove(self) -> None:
        """Stop it and delete its data."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
