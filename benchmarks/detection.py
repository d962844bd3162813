"""Detection and recovery latency: kill a service, time its `down` event and its restart.

Targets (p95 over the runs): detection <= interval x fall + 0.3 s, and the restart
command started <= 0.3 s after detection.

One agent supervises one demo HTTP service with an http probe (interval 1 s,
fall 2, rise 1, no jitter) and a recovery ladder whose only step is the restart
command. That command is wrapped in `/bin/sh -c 'date +%s.%N >> MARKER; exec ...'`
so the moment it starts is written down by the restarted process itself, at the
cost of one fork of `date` (about a millisecond), not by anything the agent reports.

Each run: wait until the service is up and its ladder idle, wait a random part of
the probe interval (so the kill lands at every phase of the probe schedule),
SIGKILL the service, then read:

- detection: the agent's `service_down` event time minus the kill time;
- restart start: the marker time minus the `service_down` event time;
- recovered: the `service_up` event time minus the kill time (for information).

All three clocks are this machine's wall clock.

    .venv/bin/python benchmarks/detection.py            # 20 runs
    .venv/bin/python benchmarks/detection.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import (
    Agent,
    BenchmarkError,
    Cleanup,
    machine,
    percentile,
    run_benchmark,
    table,
)

from console.demo.component import wait_for
from console.demo.service import DemoService

INTERVAL, FALL = 1.0, 2
SLACK = 0.3
DETECTION_TARGET = INTERVAL * FALL + SLACK
RESTART_TARGET = 0.3
MARK_AND_EXEC = 'date +%s.%N >> "$0"; exec "$@"'


def build_config(svc: DemoService, marker: Path) -> dict[str, Any]:
    return {
        "probes": {
            "web": {
                "kind": "http",
                "url": svc.url,
                "interval": f"{INTERVAL:g}s",
                "timeout": "500ms",
                "jitter": "0s",
                "fall": FALL,
                "rise": 1,
                # A kill every few seconds is flapping by design here; flap detection
                # would rightly hold recovery, which is not what is measured.
                "flap": {"window": "10s", "changes": 1000},
            }
        },
        "services": {
            "web": {
                "probes": ["web"],
                "restart": {
                    "command": ["/bin/sh", "-c", MARK_AND_EXEC, str(marker), *svc.start_argv()],
                    "timeout": "10s",
                },
                "recovery": {
                    "steps": ["restart"],
                    "verify_window": "5s",
                    "backoff": {"initial": "200ms", "max": "1s"},
                    # Every run is one attempt; the budget must not be what is measured.
                    "max_attempts": 1000,
                    "window": "1h",
                },
            }
        },
    }


def markers(path: Path) -> list[float]:
    try:
        return [float(line) for line in path.read_text().split()]
    except FileNotFoundError:
        return []


def settled(agent: Agent) -> bool:
    svc = agent.get("/api/v1/services")[0]
    return bool(svc["state"] == "up" and svc["recovery"]["state"] == "idle")


def first_event(agent: Agent, since: int, kind: str) -> dict[str, Any] | None:
    return next((e for e in agent.events_since(since) if e["kind"] == kind), None)


def one_run(agent: Agent, svc: DemoService, marker: Path, n: int) -> dict[str, float]:
    wait_for(lambda: settled(agent), 30, f"run {n}: the service up and its ladder idle", 0.05)
    cursor = agent.last_event_id()
    seen_markers = len(markers(marker))
    time.sleep(random.uniform(0, INTERVAL))  # the kill's phase against the probe schedule
    pid = svc.pid()
    if pid is None:
        raise BenchmarkError(f"run {n}: the demo service wrote no pidfile")
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    down = wait_for(
        lambda: first_event(agent, cursor, "service_down"), 15, f"run {n}: service_down event"
    )
    started = wait_for(
        lambda: markers(marker)[seen_markers:], 15, f"run {n}: the restart command to start"
    )[0]
    up = wait_for(
        lambda: first_event(agent, cursor, "service_up"), 30, f"run {n}: service_up event"
    )
    return {
        "detection_s": down["ts"] - killed_at,
        "restart_after_detection_s": started - down["ts"],
        "recovered_s": up["ts"] - killed_at,
    }


def measure(runs: int) -> list[dict[str, float]]:
    cleanup = Cleanup()
    try:
        tmp = Path(tempfile.mkdtemp(prefix="hadeck-bench-detection-"))
        cleanup.add(f"temporary directory {tmp}", lambda: shutil.rmtree(tmp, ignore_errors=True))
        svc = DemoService(tmp)
        cleanup.add(f"demo service on port {svc.port}", svc.stop)
        svc.start()
        marker = tmp / "restart-started"
        agent = Agent(tmp, build_config(svc, marker))
        cleanup.add("the agent", agent.stop)
        agent.start()
        results = []
        for n in range(1, runs + 1):
            r = one_run(agent, svc, marker, n)
            print(
                f"run {n:2d}: detection {r['detection_s']:.3f} s, restart started "
                f"{r['restart_after_detection_s'] * 1000:.0f} ms later, "
                f"recovered {r['recovered_s']:.3f} s after the kill",
                file=sys.stderr,
            )
            results.append(r)
        return results
    finally:
        cleanup.run()


def summary(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 4),
        "p50": round(percentile(values, 50), 4),
        "p95": round(percentile(values, 95), 4),
        "max": round(max(values), 4),
    }


def report(results: list[dict[str, float]]) -> dict[str, Any]:
    stats = {k: summary([r[k] for r in results]) for k in results[0]}
    detection_ok = stats["detection_s"]["p95"] <= DETECTION_TARGET
    restart_ok = stats["restart_after_detection_s"]["p95"] <= RESTART_TARGET
    print(
        f"detection: {len(results)} runs, http probe every {INTERVAL:g} s, fall {FALL}, "
        "service SIGKILLed at a random phase of the probe schedule"
    )
    print()

    def row(label: str, key: str, target: str, ok: bool | None) -> list[str]:
        s = stats[key]
        return [
            label,
            target,
            *(f"{s[q]:.3f} s" for q in ("min", "p50", "p95", "max")),
            "" if ok is None else ("PASS" if ok else "FAIL"),
        ]

    print(
        table(
            ["measure", "target (p95)", "min", "p50", "p95", "max", "result"],
            [
                row(
                    "kill -> service_down",
                    "detection_s",
                    f"<= {DETECTION_TARGET:g} s",
                    detection_ok,
                ),
                row(
                    "service_down -> restart started",
                    "restart_after_detection_s",
                    f"<= {RESTART_TARGET:g} s",
                    restart_ok,
                ),
                row("kill -> service_up (recovered)", "recovered_s", "", None),
            ],
        )
    )
    print()
    return {
        "benchmark": "detection",
        "ok": detection_ok and restart_ok,
        "runs": len(results),
        "interval_s": INTERVAL,
        "fall": FALL,
        "targets": {
            "detection_p95_s": DETECTION_TARGET,
            "restart_after_detection_p95_s": RESTART_TARGET,
        },
        **stats,
        "machine": machine(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20, help="kills to time (default 20)")
    args = p.parse_args()
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return run_benchmark("detection", lambda: measure(args.runs), report)


if __name__ == "__main__":
    sys.exit(main())
