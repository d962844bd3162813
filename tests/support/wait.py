"""Waiting on conditions with deadlines: the only way tests wait.

The one implementation is the demo's (console/demo/component.py), shared with the
benchmarks: a condition polled until it holds, asked once more at the deadline, then
ComponentError naming what was awaited and the last answer.
"""

from __future__ import annotations

from console.demo.component import wait_for

__all__ = ["wait_for"]
