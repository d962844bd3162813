"""What both benchmarks share: the demo service, one agent process, waiting, statistics.

Everything listens on 127.0.0.1 and lives in a temporary directory. Every
process started here is ended by `Cleanup`, in reverse order of start, also
when the benchmark is interrupted (Ctrl-C, SIGTERM) or fails half-way.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

PYTHON = sys.executable
REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


class BenchmarkError(Exception):
    """The benchmark could not measure (setup failed, a deadline passed); the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll `condition` until it returns something truthy; raise BenchmarkError at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise BenchmarkError(
                f"timed out after {timeout:g}s waiting for {what} (last: {last!r})"
            )
        time.sleep(interval)


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, so `finally` blocks clean up as on Ctrl-C."""

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class DemoService:
    """The demo HTTP service (`console.demo.service --daemon`): forks, returns once listening."""

    dir: Path
    port: int = field(default_factory=free_port)

    @property
    def pidfile(self) -> Path:
        return self.dir / f"svc-{self.port}.pid"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    def start_argv(self) -> list[str]:
        return [
            PYTHON,
            "-m",
            "console.demo.service",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--pidfile",
            str(self.pidfile),
            "--daemon",
        ]

    def start(self) -> None:
        done = subprocess.run(self.start_argv(), capture_output=True, text=True, timeout=15)
        if done.returncode != 0:
            raise BenchmarkError(
                f"demo service on port {self.port} did not start: {done.stderr.strip()}"
            )

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def alive(self) -> bool:
        pid = self.pid()
        return pid is not None and pid_exists(pid)

    def stop(self) -> None:
        """End the instance the pidfile names (restarts may have replaced the first one)."""
        pid = self.pid()
        if pid is not None and pid_exists(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(BenchmarkError):
                wait_for(lambda: not pid_exists(pid), 5, f"demo service pid {pid} to end")


@dataclass
class Agent:
    """One `hadeck-agent run` child process with its own config and state directory."""

    dir: Path
    config: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        agent = self.config.setdefault("agent", {})
        agent.setdefault("name", "bench-host")
        agent.setdefault("state_dir", str(self.dir / "state"))
        agent.setdefault("log_level", "info")
        self.config.setdefault("api", {}).setdefault("listen", f"127.0.0.1:{self.port}")
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    @property
    def config_path(self) -> Path:
        return self.dir / "agent.yaml"

    @property
    def log_path(self) -> Path:
        return self.dir / "agent.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "agent.cli", "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.dir,
                # Its own process group: a Ctrl-C reaches the benchmark, which then stops
                # the agent in order, instead of both racing to shut down.
                start_new_session=True,
            )
        wait_for(self._healthy, timeout, f"the agent on port {self.port} to answer /healthz")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise BenchmarkError(
                f"the agent exited with {self.proc.returncode}:\n{self.log_tail()}"
            )
        try:
            return self.client.get("/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def get(self, path: str, **params: Any) -> Any:
        r = self.client.get(path, params=params)
        r.raise_for_status()
        return r.json()

    def text(self, path: str) -> str:
        r = self.client.get(path)
        r.raise_for_status()
        return r.text

    def events_since(self, since: int) -> list[dict[str, Any]]:
        """Events with id > since, oldest first (the API pages by id)."""
        found: list[dict[str, Any]] = []
        while True:
            page = self.get("/api/v1/events", since=since, limit=1000)
            found.extend(page)
            if len(page) < 1000:
                return found
            since = page[-1]["id"]

    def last_event_id(self) -> int:
        newest = self.get("/api/v1/events", limit=1)
        return int(newest[-1]["id"]) if newest else 0

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, wait, SIGKILL if it hangs; returns the exit code (None if never started)."""
        self.client.close()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"agent did not stop within {timeout:g}s; killing it", file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


class Cleanup:
    """Stops registered things in reverse order; one failing stop does not skip the others."""

    def __init__(self) -> None:
        self._stops: list[tuple[str, Callable[[], object]]] = []

    def add(self, what: str, stop: Callable[[], object]) -> None:
        self._stops.append((what, stop))

    def run(self) -> None:
        while self._stops:
            what, stop = self._stops.pop()
            try:
                stop()
            except Exception as exc:
                print(f"cleanup: stopping {what} failed: {exc}", file=sys.stderr)


def metric_sum(text: str, name: str) -> float:
    """Sum of every sample of one metric in Prometheus text format."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in load],
        "python": sys.version.split()[0],
    }


def emit_json(payload: dict[str, Any]) -> None:
    """The one machine-readable line, always last on stdout."""
    sys.stdout.flush()
    print(json.dumps(payload, sort_keys=False), flush=True)


def run_benchmark(
    name: str, measure: Callable[[], T], report: Callable[[T], dict[str, Any]]
) -> int:
    """Measure, then print the table and the JSON line last.

    Exit status: 0 targets met, 1 missed, 2 could not measure (the JSON line
    says why), 130 interrupted (everything started has been stopped).
    """
    with sigterm_as_interrupt():
        try:
            result = measure()
        except BenchmarkError as exc:
            print(f"{name}: could not measure: {exc}", file=sys.stderr)
            emit_json({"benchmark": name, "ok": False, "error": str(exc)})
            return 2
        except KeyboardInterrupt:
            print(f"{name}: interrupted; everything started has been stopped", file=sys.stderr)
            return 130
    payload = report(result)
    emit_json(payload)
    return 0 if payload["ok"] else 1
