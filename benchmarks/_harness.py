"""What the benchmarks share: one agent process, cleanup, statistics, the report.

Processes are console.demo.component's Components and the demo service its
DemoService (the demo and the tests use the same). Everything listens on
127.0.0.1 and lives in a temporary directory. Every process started here is
ended by `Cleanup`, in reverse order of start, also when the benchmark is
interrupted (Ctrl-C, SIGTERM) or fails half-way.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from console.demo import component
from console.demo.component import ComponentError, free_port

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


class BenchmarkError(Exception):
    """The benchmark could not measure (setup failed, a deadline passed); the message says why."""


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
class Agent:
    """One `hadeck-agent run` child process with its own config and state directory."""

    dir: Path
    config: dict[str, Any]
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        agent = self.config.setdefault("agent", {})
        agent.setdefault("name", "bench-host")
        agent.setdefault("state_dir", str(self.dir / "state"))
        agent.setdefault("log_level", "info")
        self.config.setdefault("api", {}).setdefault("listen", f"127.0.0.1:{self.port}")
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=url, timeout=10)
        name = f"agent {agent['name']}"
        self.component = component.agent(
            self.config_path, url, self.dir / "agent.log", name=name, cwd=self.dir
        )

    @property
    def config_path(self) -> Path:
        return self.dir / "agent.yaml"

    @property
    def pid(self) -> int:
        return self.component.pid

    def start(self, timeout: float = 30) -> None:
        self.component.start(timeout)

    def kill(self) -> None:
        """The host dies: SIGKILL."""
        self.component.kill()

    def log_tail(self, lines: int = 30) -> str:
        return self.component.log_tail(lines)

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
        """SIGTERM, wait, SIGKILL if it hangs (an error then); returns the exit code (None if
        never started)."""
        self.client.close()
        return self.component.stop(timeout)


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
        except (BenchmarkError, ComponentError) as exc:
            print(f"{name}: could not measure: {exc}", file=sys.stderr)
            emit_json({"benchmark": name, "ok": False, "error": str(exc)})
            return 2
        except KeyboardInterrupt:
            print(f"{name}: interrupted; everything started has been stopped", file=sys.stderr)
            return 130
    payload = report(result)
    emit_json(payload)
    return 0 if payload["ok"] else 1
