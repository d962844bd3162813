"""`hadeck demo` end to end: real agents, real services, the real console.

The console is driven headless (Pilot) on the demo's own inventory; the demo as
a program runs in a pseudo-terminal and must leave no process behind when its
terminal goes away or it is told to stop.
"""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from console import inventory
from console.app import HadeckApp
from console.connect import build
from console.demo import fleet
from console.fleet import COLUMNS
from console.widgets.fleet_table import FleetTable
from tests.support.wait import wait_for
from tests.tui.conftest import until


async def test_a_killed_demo_service_goes_down_then_up_in_the_console(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    hosts = fleet.start(tmp_path / "demo")
    try:
        inv_path = tmp_path / "inventory.yaml"
        inv_path.write_text(yaml.safe_dump(fleet.inventory(hosts)))
        model, clients = build(inventory.load(inv_path))
        app = HadeckApp(model, clients, poll_interval=0.3, theme="hadeck-dark", actor="tester")
        async with app.run_test(size=(120, 40)) as pilot:

            def status_of_demo_1() -> str:
                return app.model.row(app.model.hosts["demo-1"], time.time()).status

            def demo_1_ok() -> bool:
                """demo-1 to be ok"""
                return status_of_demo_1() == "ok"

            def demo_1_down() -> bool:
                """demo-1 to be down"""
                return status_of_demo_1() == "down"

            await until(pilot, demo_1_ok, timeout=30)
            os.kill(int(hosts[0].pidfile.read_text().split()[0]), signal.SIGKILL)
            await until(pilot, demo_1_down, timeout=15)
            # what the operator sees: the fleet table says so
            app.tick()
            await pilot.pause()
            table = app.screen.query_one(FleetTable)
            row = next(r for r in table.rows if r.key == "demo-1")
            assert row.values[COLUMNS.index("status")] == "down"
            await until(pilot, demo_1_ok, timeout=30)  # the agent restarted it
            kinds = [e.kind for h, e in app.model.merged_events(host="demo-1")]
            assert {"service_down", "recovery_started", "service_up"} <= set(kinds)
    finally:
        fleet.stop(hosts)


def demo_processes(root: Path) -> list[psutil.Process]:
    """Every process whose command line points into this demo's directory."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(str(root) in arg for arg in p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            continue
    return found


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=["hangup", "terminate"])
def test_the_demo_leaves_no_process_behind(tmp_path: Path, sig: signal.Signals) -> None:
    root = tmp_path / "demo"
    primary, replica = pty.openpty()
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "TERM": "xterm-256color"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "console.cli", "demo", "--dir", str(root)],
        stdin=replica,
        stdout=replica,
        stderr=replica,
        env=env,
        start_new_session=True,
    )
    os.close(replica)
    # Read what the console draws, as a terminal would, so it never blocks on a full pty.
    drain = threading.Thread(target=_drain, args=(primary,), daemon=True)
    drain.start()
    try:
        # 3 agents and 3 services up, and the console started
        wait_for(lambda: len(demo_processes(root)) >= 6, 60, "the demo's agents and services")
        wait_for(lambda: (root / "inventory.yaml").exists(), 30, "the console to start")
        started = demo_processes(root)
        os.kill(proc.pid, sig)
        assert proc.wait(30) == 0
        wait_for(
            lambda: not [p for p in started if p.is_running() and p.status() != "zombie"],
            20,
            "every demo process to end",
        )
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in demo_processes(root):
            p.kill()
        os.close(primary)


def _drain(fd: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 65536):
            pass
