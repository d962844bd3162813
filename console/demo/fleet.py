"""`hadeck demo`: a local fleet of real agents on loopback, each supervising a demo HTTP service.

Everything runs as child processes under one demo directory, with generated
configs and state; every process started here is stopped on exit, also on
Ctrl-C or SIGTERM. Until the console lands, the fleet is shown as a plain
text view that refreshes every second.
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


def _render(hosts: list[DemoHost], seen: dict[str, int]) -> list[str]:
    lines = [f"{'HOST':8} {'SERVICE':8} {'STATE':8} {'RECOVERY':10} {'ATTEMPTS':8} LAST PROBE"]
    news: list[str] = []
    for host in hosts:
        try:
            status = httpx.get(host.url + "/api/v1/status", timeout=2).json()
            events = httpx.get(
                host.url + "/api/v1/events", params={"since": seen.get(host.name, 0)}, timeout=2
            ).json()
        except (httpx.HTTPError, ValueError):
            lines.append(f"{host.name:8} {'-':8} {'stale':8} agent not answering")
            continue
        probes = {p["name"]: p for p in status["probes"]}
        for svc in status["services"]:
            rec = svc["recovery"] or {}
            last = probes[svc["probes"][0]]["last"] or {}
            lines.append(
                f"{host.name:8} {svc['name']:8} {svc['state']:8} "
                f"{rec.get('state', '-'):10} {rec.get('attempts_in_window', 0):>8} "
                f"{last.get('detail', '')[:50]}"
            )
        for e in events:
            seen[host.name] = max(seen.get(host.name, 0), e["id"])
            stamp = time.strftime("%H:%M:%S", time.localtime(e["ts"]))
            news.append(f"{stamp} {host.name} {e['severity']:8} {e['message'][:110]}")
    return [*lines, "", *news]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(root: Path, seconds: float | None) -> int:
    root.mkdir(parents=True, exist_ok=True)
    hosts: list[DemoHost] = []
    # SIGTERM and SIGHUP (the terminal went away) end the demo like Ctrl-C does.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        print(f"starting {len(HOSTS)} agents under {root} ...", flush=True)
        hosts = start(root)
        h = hosts[0]
        guide = (
            "ready: " + ", ".join(f"{x.name} {x.url}" for x in hosts) + "\n\n"
            "Break something and watch the agent detect and recover it:\n"
            f"  kill $(cat {h.pidfile})    # the service dies\n"
            f"  touch {hosts[1].fail_file}    # its health check fails (503)\n"
            f"Audit log: {h.dir / 'state' / 'audit.jsonl'}\n"
            f"  (check it: hadeck-agent audit verify FILE)    Ctrl-C stops the demo.\n"
        )
        print(guide, flush=True)
        seen: dict[str, int] = {}
        deadline = time.monotonic() + seconds if seconds else None
        tty = sys.stdout.isatty()
        history: list[str] = []
        while deadline is None or time.monotonic() < deadline:
            table = _render(hosts, seen)
            split = table.index("")
            history = (history + table[split + 1 :])[-15:]
            if tty:
                print(
                    "\033[H\033[J"
                    + guide
                    + "\n"
                    + "\n".join(table[:split])
                    + "\n\nrecent events:\n"
                    + "\n".join(history),
                    flush=True,
                )
            else:
                for line in table[split + 1 :]:
                    print(line, flush=True)
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping the demo fleet ...", flush=True)
        stop(hosts)
    return 0
