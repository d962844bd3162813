"""Footprint: one agent running 50 probes of mixed kinds at 5 s intervals, watched for 60 s.

Target: agent RSS <= 60 MB and the agent process's own CPU <= 1 % of one core.

Each probe has interval 4.5 s and jitter 1 s: APScheduler adds a random 0-1 s to
every period, so each probe runs on average every 5 s, and the runs are spread
over time as on a real host instead of firing in one burst.

Three demo HTTP services give the http, tcp and process probes something real
to check; command probes run `true`; disk probes check `/`; file_age probes
check a heartbeat file this benchmark touches. After a warm-up (every probe has
left `unknown`), the agent is left alone for the observation window: nothing
calls its API until the window is over, so the figures are the agent's own.
CPU is the user+system time of the agent process during the window divided by
the wall time; the CPU of the processes it spawns (command probes) is reported
apart, as it is not the agent's own and the target does not count it.

For scale, the benchmark also measures this machine's floor: the CPU that a
bare asyncio loop (no agent) spends on each timer wake-up. Every probe run
costs at least one such wake-up, most two or three (its I/O completing).

    .venv/bin/python benchmarks/footprint.py            # the full 60 s window
    .venv/bin/python benchmarks/footprint.py --seconds 10
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from _harness import (
    Agent,
    BenchmarkError,
    Cleanup,
    machine,
    metric_sum,
    run_benchmark,
    table,
)

from console.demo.component import wait_for
from console.demo.service import DemoService

MB = 1_000_000
RSS_TARGET_MB = 60.0
CPU_TARGET_PERCENT = 1.0
PROBES = 50
INTERVAL, JITTER = 4.5, 1.0
# APScheduler adds uniform(0, jitter) to each period (it does not centre it), so a probe
# runs on average every interval + jitter/2 = 5 seconds.
MEAN_PERIOD = INTERVAL + JITTER / 2
EXPECTED_RUNS_PER_SECOND = PROBES / MEAN_PERIOD
# 50 probes of mixed kinds: how many of each.
MIX = {"http": 15, "tcp": 10, "command": 8, "process": 7, "disk": 5, "file_age": 5}
assert sum(MIX.values()) == PROBES


def build_config(services: list[DemoService], heartbeat: Path) -> dict[str, Any]:
    timing = {"interval": f"{INTERVAL:g}s", "timeout": "2s", "jitter": f"{JITTER:g}s"}
    probes: dict[str, dict[str, Any]] = {}
    members: dict[str, list[str]] = {f"web{i}": [] for i in range(len(services))}
    members["host"] = []
    for kind, count in MIX.items():
        for n in range(count):
            svc_index = n % len(services)
            svc = services[svc_index]
            name = f"{kind}-{n}"
            if kind == "http":
                spec: dict[str, Any] = {"url": svc.url}
            elif kind == "tcp":
                spec = {"host": "127.0.0.1", "port": svc.port}
            elif kind == "process":
                spec = {"pidfile": str(svc.pidfile)}
            elif kind == "command":
                spec = {"command": ["true"]}
            elif kind == "disk":
                spec = {"path": "/", "min_free": "1MiB"}
            else:
                spec = {"path": str(heartbeat), "max_age": "1h"}
            probes[name] = {"kind": kind, **spec, **timing}
            group = f"web{svc_index}" if kind in ("http", "tcp", "process") else "host"
            members[group].append(name)
    return {
        "resources": {"mounts": ["/"]},
        "probes": probes,
        "services": {name: {"probes": names} for name, names in members.items()},
    }


def all_known(agent: Agent) -> list[dict[str, Any]] | None:
    probes = agent.get("/api/v1/probes")
    if len(probes) == PROBES and all(p["state"] != "unknown" for p in probes):
        return list(probes)
    return None


def cpu_seconds(proc: psutil.Process) -> tuple[float, float, float]:
    """(own user, own system, reaped children's user+system) in seconds."""
    t = proc.cpu_times()
    return t.user, t.system, t.children_user + t.children_system


WAKE_FLOOR = """
import asyncio, time
async def main(n):
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    def tick(left):
        if left:
            loop.call_later(0.1, tick, left - 1)
        else:
            done.set_result(None)
    start = time.process_time()
    tick(n)
    await done
    print((time.process_time() - start) / n)
asyncio.run(main(100))
"""


def wake_floor() -> float:
    """CPU seconds a bare asyncio loop on this machine spends per timer wake-up."""
    out = subprocess.run(
        [sys.executable, "-c", WAKE_FLOOR], capture_output=True, text=True, timeout=60, check=True
    )
    return float(out.stdout)


def baseline(seconds: float) -> dict[str, float]:
    """The same agent with no probes at all: what the process costs before any work."""
    cleanup = Cleanup()
    try:
        tmp = Path(tempfile.mkdtemp(prefix="hadeck-bench-baseline-"))
        cleanup.add(f"temporary directory {tmp}", lambda: shutil.rmtree(tmp, ignore_errors=True))
        agent = Agent(tmp, {"resources": {"mounts": ["/"]}})
        cleanup.add("the baseline agent", agent.stop)
        agent.start()
        proc = psutil.Process(agent.pid)
        time.sleep(2)
        user0, sys0, _ = cpu_seconds(proc)
        t0 = time.monotonic()
        time.sleep(seconds)
        user1, sys1, _ = cpu_seconds(proc)
        own = user1 + sys1 - user0 - sys0
        return {
            "baseline_rss_mb": round(proc.memory_info().rss / MB, 1),
            "baseline_cpu_percent": round(100.0 * own / (time.monotonic() - t0), 3),
        }
    finally:
        cleanup.run()


def measure(seconds: float) -> dict[str, Any]:
    cleanup = Cleanup()
    try:
        tmp = Path(tempfile.mkdtemp(prefix="hadeck-bench-footprint-"))
        cleanup.add(f"temporary directory {tmp}", lambda: shutil.rmtree(tmp, ignore_errors=True))
        services = [DemoService(tmp) for _ in range(3)]
        for svc in services:
            cleanup.add(f"demo service on port {svc.port}", svc.stop)
            svc.start()
        heartbeat = tmp / "heartbeat"
        heartbeat.touch()

        agent = Agent(tmp, build_config(services, heartbeat))
        cleanup.add("the agent", agent.stop)
        started = time.monotonic()
        agent.start()
        proc = psutil.Process(agent.pid)
        rss_started = proc.memory_info().rss

        probes = wait_for(lambda: all_known(agent), 60, "every probe to leave `unknown`", 0.5)
        warmup = time.monotonic() - started
        not_up = sorted(p["name"] for p in probes if p["state"] != "up")
        if not_up:
            print(f"warning: probes not up after warm-up: {', '.join(not_up)}", file=sys.stderr)
        runs_before = metric_sum(agent.text("/metrics"), "hadeck_probe_runs_total")

        # The observation window: the agent is left alone; only psutil looks at it.
        user0, sys0, children0 = cpu_seconds(proc)
        t0 = time.monotonic()
        rss_max, rss_samples = 0, 0
        threads_max = 0
        while (left := t0 + seconds - time.monotonic()) > 0:
            rss_max = max(rss_max, proc.memory_info().rss)
            threads_max = max(threads_max, proc.num_threads())
            rss_samples += 1
            time.sleep(min(1.0, left))
        user1, sys1, children1 = cpu_seconds(proc)
        own = user1 + sys1 - user0 - sys0
        wall = time.monotonic() - t0
        mem = proc.memory_full_info()
        rss_final = mem.rss
        rss_max = max(rss_max, rss_final)
        fds = proc.num_fds()

        runs_after = metric_sum(agent.text("/metrics"), "hadeck_probe_runs_total")
        failures = metric_sum(
            "\n".join(
                line for line in agent.text("/metrics").splitlines() if 'result="failure"' in line
            ),
            "hadeck_probe_runs_total",
        )
        if proc.status() == psutil.STATUS_ZOMBIE or not proc.is_running():
            raise BenchmarkError(f"the agent died during the window:\n{agent.log_tail()}")
        return {
            "window_seconds": round(wall, 2),
            "warmup_seconds": round(warmup, 2),
            "probes": PROBES,
            "mix": MIX,
            "probes_not_up": not_up,
            "probe_runs": int(runs_after - runs_before),
            "probe_runs_per_second": round((runs_after - runs_before) / wall, 2),
            "probe_failures_total": int(failures),
            "rss_started_mb": round(rss_started / MB, 1),
            "rss_max_mb": round(rss_max / MB, 1),
            "rss_final_mb": round(rss_final / MB, 1),
            "uss_final_mb": round(mem.uss / MB, 1),
            "pss_final_mb": round(mem.pss / MB, 1),
            "rss_samples": rss_samples,
            "cpu_seconds": round(own, 3),
            "cpu_percent": round(100.0 * own / wall, 3),
            "cpu_user_percent": round(100.0 * (user1 - user0) / wall, 3),
            "cpu_system_percent": round(100.0 * (sys1 - sys0) / wall, 3),
            "cpu_us_per_run": round(1e6 * own / max(1.0, runs_after - runs_before), 1),
            "children_cpu_seconds": round(children1 - children0, 3),
            "children_cpu_percent": round(100.0 * (children1 - children0) / wall, 3),
            "threads_max": threads_max,
            "open_fds": fds,
        }
    finally:
        cleanup.run()


# What the agent imports decides most of its RSS: another release of these changes it.
MEMORY_DEPENDENCIES = (
    "fastapi",
    "starlette",
    "pydantic",
    "pydantic-core",
    "uvicorn",
    "apscheduler",
    "prometheus-client",
    "psutil",
    "pyyaml",
    "h11",
)


def versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in MEMORY_DEPENDENCIES}


def report(r: dict[str, Any]) -> dict[str, Any]:
    rss_ok = r["rss_max_mb"] <= RSS_TARGET_MB
    cpu_ok = r["cpu_percent"] <= CPU_TARGET_PERCENT
    print(
        f"footprint: {r['probes']} probes "
        f"({', '.join(f'{n} {k}' for k, n in r['mix'].items())}) "
        f"every {MEAN_PERIOD:g} s on average (interval {INTERVAL:g} s + jitter 0-{JITTER:g} s), "
        f"{r['window_seconds']:.1f} s window after a {r['warmup_seconds']:.1f} s warm-up"
    )
    print(
        f"probe runs in the window: {r['probe_runs']} "
        f"({r['probe_runs_per_second']:.2f}/s, expected ~{EXPECTED_RUNS_PER_SECOND:.2f}/s); "
        f"failed runs since start: {r['probe_failures_total']}"
    )
    print()
    rows = [
        [
            "agent RSS, max in window",
            f"<= {RSS_TARGET_MB:.0f} MB",
            f"{r['rss_max_mb']:.1f} MB",
            "PASS" if rss_ok else "FAIL",
        ],
        [
            "agent CPU, own (user+sys)",
            f"<= {CPU_TARGET_PERCENT:g} % of a core",
            f"{r['cpu_percent']:.2f} %",
            "PASS" if cpu_ok else "FAIL",
        ],
        ["agent RSS, at /healthz", "", f"{r['rss_started_mb']:.1f} MB", ""],
        [
            "same agent with no probes: RSS / CPU",
            "",
            f"{r['baseline_rss_mb']:.1f} MB / {r['baseline_cpu_percent']:.2f} %",
            "",
        ],
        ["agent RSS, final", "", f"{r['rss_final_mb']:.1f} MB", ""],
        ["agent USS / PSS, final", "", f"{r['uss_final_mb']:.1f} / {r['pss_final_mb']:.1f} MB", ""],
        [
            "agent CPU: user / system",
            "",
            f"{r['cpu_user_percent']:.2f} / {r['cpu_system_percent']:.2f} %",
            "",
        ],
        ["agent CPU per probe run", "", f"{r['cpu_us_per_run']:.0f} us", ""],
        [
            "this machine: one bare asyncio wake-up",
            "",
            f"{r['wake_floor_us']:.0f} us",
            "",
        ],
        ["agent CPU seconds in window", "", f"{r['cpu_seconds']:.2f} s", ""],
        [
            "children CPU (command probes)",
            "not counted",
            f"{r['children_cpu_percent']:.2f} %",
            "",
        ],
        ["agent threads (max) / open fds", "", f"{r['threads_max']} / {r['open_fds']}", ""],
    ]
    print(table(["measure", "target", "measured", "result"], rows))
    print()
    return {
        "benchmark": "footprint",
        "ok": rss_ok and cpu_ok,
        "targets": {"rss_max_mb": RSS_TARGET_MB, "cpu_percent": CPU_TARGET_PERCENT},
        "rss_pass": rss_ok,
        "cpu_pass": cpu_ok,
        **r,
        "machine": machine(),
        "versions": versions(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="observation window (default 60)")
    args = p.parse_args()
    if args.seconds <= 0:
        p.error("--seconds must be positive")
    return run_benchmark(
        "footprint",
        lambda: (
            baseline(min(20.0, args.seconds))
            | measure(args.seconds)
            | {"wake_floor_us": round(1e6 * wake_floor(), 1)}
        ),
        report,
    )


if __name__ == "__main__":
    sys.exit(main())
