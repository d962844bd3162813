"""`hadeck demo`: a local fleet of real agents on loopback, each supervising a demo HTTP service.

Everything runs as child processes under one demo directory, with generated
configs and state; every process started here is stopped on exit, also on
Ctrl-C, SIGTERM or SIGHUP, and when a start fails half-way. The console opens
on a generated inventory of the three local agents, so the demo is the product,
not a mock of it.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from console.demo import component
from console.demo.component import Component, ComponentError, free_port
from console.demo.service import DemoService

HOSTS = ("demo-1", "demo-2", "demo-3")


def default_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hadeck" / "demo"


@dataclass
class DemoHost:
    """One demo host: its agent, and the web service that agent supervises."""

    name: str
    dir: Path
    api_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.service = DemoService(self.dir, stem="web")
        self.agent: Component = component.agent(
            self.dir / "agent.yaml", self.url, self.dir / "agent.log", name=f"agent {self.name}"
        )

    @property
    def pidfile(self) -> Path:
        return self.service.pidfile

    @property
    def fail_file(self) -> Path:
        return self.service.fail_file

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def service_argv(self) -> list[str]:
        return self.service.start_argv()

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
                    "url": self.service.url,
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


def start(root: Path, hosts: list[DemoHost] | None = None) -> list[DemoHost]:
    """Start every host's service, then every agent, and return once each agent answers.

    Each host is in `hosts` (when given) before anything of it starts, so the caller's
    stop(hosts) ends what did start even when a later start fails.
    """
    hosts = [] if hosts is None else hosts
    for name in HOSTS:
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        host = DemoHost(name, d)
        hosts.append(host)
        host.fail_file.unlink(missing_ok=True)
        (d / "agent.yaml").write_text(yaml.safe_dump(host.config(), sort_keys=False))
        host.service.start()
    component.start_all(h.agent for h in hosts)
    return hosts


def stop(hosts: list[DemoHost]) -> list[str]:
    """Stop the agents side by side (before the services they would otherwise restart),
    then the services; every one is stopped even if another fails. Returns the errors."""
    errors = component.stop_all(h.agent for h in hosts)
    for host in hosts:
        try:
            host.service.stop()
        except ComponentError as exc:
            errors.append(str(exc))
    return errors


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
    status = 0
    # SIGTERM and SIGHUP (the terminal went away) end the demo like Ctrl-C does.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        print(f"starting {len(HOSTS)} agents under {root} ...", flush=True)
        start(root, hosts)
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
    except ComponentError as exc:
        print(f"hadeck demo: {exc}", file=sys.stderr)
        status = 1
    finally:
        print("stopping the demo fleet ...", flush=True)
        for error in stop(hosts):
            print(f"hadeck demo: {error}", file=sys.stderr)
    return status
