"""A real `hadeck-agent` process on loopback, and the demo HTTP service for it to supervise."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import Any

import httpx
import yaml

from console.demo import component
from console.demo.component import free_port, wait_for
from console.demo.service import DemoService

__all__ = ["AgentProcess", "DemoService", "free_port", "http_probe", "restartable"]


@dataclass
class AgentProcess:
    """One `hadeck-agent run` child process with its own config and state directory."""

    dir: Path
    config: dict[str, Any]
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
        self.component = component.agent(
            self.config_path, self.url, self.log_path, name=f"agent {self.config['agent']['name']}"
        )

    @property
    def proc(self) -> Popen[bytes] | None:
        return self.component.proc

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
        self.component.start()
        return self

    def log(self) -> str:
        return self.component.log()

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

    def finished(self, answer: httpx.Response, timeout: float = 30) -> dict[str, Any]:
        """A `202`'s operation, followed until it ends."""
        assert answer.status_code == 202, answer.text
        op_id = answer.json()["id"]

        def ended() -> dict[str, Any] | None:
            op: dict[str, Any] = self.get(f"/api/v1/operations/{op_id}")
            return op if op["state"] not in ("running", "cancelling") else None

        return wait_for(ended, timeout, f"operation {op_id} to end")

    def events(self, kind: str | None = None, **match: Any) -> list[dict[str, Any]]:
        found = self.get("/api/v1/events", limit=1000)
        return [
            e
            for e in found
            if (kind is None or e["kind"] == kind) and all(e.get(k) == v for k, v in match.items())
        ]

    def wait_event(self, kind: str, timeout: float = 15, **match: Any) -> dict[str, Any]:
        def latest() -> dict[str, Any] | None:
            found = self.events(kind, **match)
            return found[-1] if found else None

        return wait_for(latest, timeout, f"event {kind} {match}")

    def probe_runs(self, probe: str, result: str) -> float:
        """hadeck_probe_runs_total of one probe and result (success, failure, unavailable)."""
        for line in self.text("/metrics").splitlines():
            if line.startswith("hadeck_probe_runs_total{") and (
                f'probe="{probe}"' in line and f'result="{result}"' in line
            ):
                return float(line.split()[-1])
        return 0.0

    def service(self, name: str) -> dict[str, Any]:
        services: dict[str, dict[str, Any]] = {s["name"]: s for s in self.get("/api/v1/services")}
        return services[name]

    def signal(self, sig: int) -> None:
        self.component.send(sig)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM and wait; returns the exit code. Not stopping in time is an error."""
        return self.component.stop(timeout)

    def kill(self) -> None:
        """The host crashes: SIGKILL."""
        self.component.kill()

    def freeze(self) -> None:
        """The host hangs: SIGSTOP (stop() and the fixtures' teardown thaw it first)."""
        self.component.freeze()

    def thaw(self) -> None:
        self.component.thaw()


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
