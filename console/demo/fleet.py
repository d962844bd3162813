"""`hadeck demo`: a local fleet of real agents on loopback, each supervising a demo HTTP service.

Everything runs as child processes under one demo directory, with generated
configs and state; every process started here is stopped on exit, also on
Ctrl-C, SIGTERM or SIGHUP. The console opens on a generated inventory of the
three local agents, so the demo is the product, not a mock of it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

HOSTS = ("demo-1", "demo-2", "demo-3")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hadeck" / "demo"


@dataclass
class DemoHost:
    name: str
    dir: Path
    api_port: int
    web_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pidfile(self) -> Path:
        return self.dir / "web.pid"

    @property
    def fail_file(self) -> Path:
        return self.dir / "web.fail"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def service_argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "console.demo.service",
            "--port",
            str(self.web_port),
            "--pidfile",
            str(self.pidfile),
            "--fail-file",
            str(self.fail_file),
            "--daemon",
        ]

    def config(self) -> dict[str, Any]:
        return {
            "agent": {"name": self.name, "state_dir": str(self.dir / "state")},
            "api": {"listen": f"127.0.0.1:{self.api_port}"},
            # The three demo hosts form one HA group: one of them is the primary `web`.
            # Leases in one SQLite file, as members on one machine share it.
            "lease_store": {
                "kind": "sqlite",
                "path": str(self.dir.parent / "leases.db"),
                "timeout": "1s",
            },
            "groups": {
                "web": {
                    "member": self.name,
                    "service": "web",
                    "ttl": "4s",
                    "loop_wait": "1s",
                    "hooks": {
                        "promote": {
                            "command": ["sh", "-c", f"echo primary > {self.dir / 'role'}"],
                            "timeout": "5s",
                        },
                        "demote": {
                            "command": ["sh", "-c", f"echo standby > {self.dir / 'role'}"],
                            "timeout": "1s",  # within the margin check-config demands: loop_wait
                        },
                    },
                }
            },
            "probes": {
                "web-http": {
                    "kind": "http",
                    "url": f"http://127.0.0.1:{self.web_port}/health",
                    "interval": "1s",
                    "timeout": "500ms",
                    "fall": 2,
                    "rise": 2,
                },
                "web-process": {
                    "kind": "process",
                    "pidfile": str(self.pidfile),
                    "interval": "2s",
                    "timeout": "1s",
                    "fall": 2,
                    "rise": 1,
                },
                "root-disk": {
                    "kind": "disk",
                    "path": "/",
                    "min_free_percent": 1,
                    "interval": "30s",
                    "timeout": "5s",
                },
            },
            "services": {
                "web": {
                    "probes": ["web-http", "web-process"],
                    "restart": {"command": self.service_argv(), "timeout": "15s"},
                    "recovery": {
                        "steps": ["restart", "clear-and-restart"],
                        "verify_window": "5s",
                        "backoff": {"initial": "2s", "max": "30s"},
                        "max_attempts": 5,
                        "window": "10m",
                    },
                },
            },
            "runbooks": {
                "clear-and-restart": {
                    "description": "remove the failure flag, then start the service again",
                    "steps": [
                        {"command": ["rm", "-f", str(self.fail_file)], "timeout": "5s"},
                        {"command": self.service_argv(), "timeout": "15s"},
                    ],
                },
            },
        }


def _kill_service(host: DemoHost) -> None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        os.kill(int(host.pidfile.read_text().split()[0]), signal.SIGTERM)


def start(root: Path) -> list[DemoHost]:
    hosts = []
    for name in HOSTS:
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        host = DemoHost(name, d, _free_port(), _free_port())
        host.fail_file.unlink(missing_ok=True)
        hosts.append(host)
        (d / "agent.yaml").write_text(yaml.safe_dump(host.config(), sort_keys=False))
        subprocess.run(host.service_argv(), check=True, timeout=20)
        log = (d / "agent.log").open("ab")
        host.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(d / "agent.yaml")],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + 30
    for host in hosts:
        while not _answers(host):
            assert host.proc is not None
            if host.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"agent {host.name} did not start; see {host.dir / 'agent.log'}")
            time.sleep(0.1)
    return hosts


def _answers(host: DemoHost) -> bool:
    try:
        return httpx.get(host.url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def stop(hosts: list[DemoHost]) -> None:
    for host in hosts:
        if host.proc is not None and host.proc.poll() is None:
            host.proc.terminate()
    for host in hosts:
        if host.proc is not None:
            try:
                host.proc.wait(15)
            except subprocess.TimeoutExpired:
                host.proc.kill()
                host.proc.wait()
        _kill_service(host)


def inventory(hosts: list[DemoHost]) -> dict[str, Any]:
    return {
        "environment": "demo",
        "polling": {"interval": "1s", "timeout": "2s", "stale_after": "5s"},
        "hosts": {
            h.name: {
                "labels": {"role": "web", "site": "local"},
                "local": {"url": h.url, "token_file": str(h.dir / "state" / "token")},
            }
            for h in hosts
        },
    }


def guide(hosts: list[DemoHost]) -> str:
    return (
        "Break something and watch hadeck detect and recover it (in another terminal):\n"
        f"  kill $(cat {hosts[0].pidfile})   # {hosts[0].name}'s web service dies\n"
        f"  touch {hosts[1].fail_file}   # {hosts[1].name}'s health check fails (503)\n"
        "Enter opens a host, r restarts a service, ? lists every key, q quits and stops the demo."
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(root: Path, *, read_only: bool = False, theme: str | None = None) -> int:
    from console import inventory as inventory_file
    from console.app import HadeckApp
    from console.connect import build

    root.mkdir(parents=True, exist_ok=True)
    hosts: list[DemoHost] = []
    # SIGTERM and SIGHUP (the terminal went away) end the demo like Ctrl-C does.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        print(f"starting {len(HOSTS)} agents under {root} ...", flush=True)
        hosts = start(root)
        inv_path = root / "inventory.yaml"
        inv_path.write_text(yaml.safe_dump(inventory(hosts), sort_keys=False))
        inv = inventory_file.load(inv_path)
        model, clients = build(inv)
        app = HadeckApp(
            model,
            clients,
            environment=inv.environment,
            read_only=read_only,
            theme=theme,
            poll_interval=inv.polling.interval,
            notice=guide(hosts),
            handle_hangup=True,
        )
        app.run()
        print("Every action and recovery is in the audit logs; check them with:")
        for h in hosts:
            print(f"  hadeck-agent audit verify {h.dir / 'state' / 'audit.jsonl'}")
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping the demo fleet ...", flush=True)
        stop(hosts)
    return 0
