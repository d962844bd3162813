"""A real `hadeck-agent` process on loopback, and the demo HTTP service for it to supervise."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.wait import wait_for

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DemoService:
    """The demo HTTP service, started daemonized exactly as its restart command starts it."""

    dir: Path
    port: int = field(default_factory=free_port)

    @property
    def pidfile(self) -> Path:
        return self.dir / f"svc-{self.port}.pid"

    @property
    def fail_file(self) -> Path:
        return self.dir / f"svc-{self.port}.fail"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    def start_argv(self) -> list[str]:
        return [
            PYTHON,
            "-m",
            "console.demo.service",
            "--port",
            str(self.port),
            "--pidfile",
            str(self.pidfile),
            "--fail-file",
            str(self.fail_file),
            "--daemon",
        ]

    def start(self) -> None:
        subprocess.run(self.start_argv(), check=True, timeout=15)

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def alive(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> int:
        pid = self.pid()
        assert pid is not None, "service is not running"
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _exists(pid), 5, f"service pid {pid} to die")
        return pid

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None and _exists(pid):
            os.kill(pid, signal.SIGKILL)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class AgentProcess:
    """One `hadeck-agent run` child process with its own config and state directory."""

    dir: Path
    config: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    port: int = field(default_factory=free_port)
    public_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.config.setdefault("agent", {}).setdefault("name", "test-host")
        self.config["agent"].setdefault("state_dir", str(self.dir / "state"))
        self.config["agent"].setdefault("log_level", "debug")
        api = self.config.setdefault("api", {})
        api.setdefault("listen", f"127.0.0.1:{self.port}")
        api.setdefault("public_listen", f"127.0.0.1:{self.public_port}")
        self.write_config()

    @property
    def config_path(self) -> Path:
        return self.dir / "agent.yaml"

    @property
    def log_path(self) -> Path:
        return self.dir / "agent.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.public_port}"

    @property
    def state_dir(self) -> Path:
        return Path(self.config["agent"]["state_dir"])

    @property
    def token(self) -> str:
        return (self.state_dir / "token").read_text().strip()

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def start(self) -> AgentProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "agent.cli", "run", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        wait_for(self._healthy, 20, f"agent on port {self.port} to answer /healthz")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, **params: Any) -> Any:
        r = httpx.get(self.url + path, params=params, timeout=10)
        r.raise_for_status()
        return r.json()

    def text(self, path: str, public: bool = False) -> str:
        r = httpx.get((self.public_url if public else self.url) + path, timeout=10)
        r.raise_for_status()
        return r.text

    def post(
        self, path: str, actor: str = "tester", json: Any = None, token: str | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.token}", "X-Hadeck-Actor": actor}
        return httpx.post(self.url + path, headers=headers, json=json, timeout=60)

    def events(self, kind: str | None = None, **match: Any) -> list[dict[str, Any]]:
        found = self.get("/api/v1/events", limit=1000)
        return [
            e
            for e in found
            if (kind is None or e["kind"] == kind) and all(e.get(k) == v for k, v in match.items())
        ]

    def wait_event(self, kind: str, timeout: float = 15, **match: Any) -> dict[str, Any]:
        return wait_for(
            lambda: (self.events(kind, **match) or [None])[-1], timeout, f"event {kind} {match}"
        )

    def probe_runs(self, probe: str, result: str) -> float:
        """hadeck_probe_runs_total of one probe and result (success, failure, unavailable)."""
        for line in self.text("/metrics").splitlines():
            if line.startswith("hadeck_probe_runs_total{") and (
                f'probe="{probe}"' in line and f'result="{result}"' in line
            ):
                return float(line.split()[-1])
        return 0.0

    def service(self, name: str) -> dict[str, Any]:
        services = {s["name"]: s for s in self.get("/api/v1/services")}
        return services[name]

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"agent did not stop within {timeout}s:\n{self.log()}") from None


def http_probe(service: DemoService, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "http",
        "url": service.url,
        "interval": "300ms",
        "timeout": "250ms",
        "fall": 2,
        "rise": 1,
        **extra,
    }


def restartable(service: DemoService, probes: list[str], **recovery: Any) -> dict[str, Any]:
    policy = {
        "steps": ["restart"],
        "verify_window": "3s",
        "backoff": {"initial": "200ms", "max": "1s"},
        "max_attempts": 5,
        "window": "1h",
    }
    policy.update(recovery)
    return {
        "probes": probes,
        "restart": {"command": service.start_argv(), "timeout": "10s"},
        "recovery": policy,
    }
