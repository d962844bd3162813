"""Small display helpers shared by screens and tests (no Textual)."""

from __future__ import annotations

import time

BARS = "▁▂▃▄▅▆▇█"
FAILED = "\u00d7"  # multiplication sign


def sparkline(values: list[float], width: int = 20) -> str:
    """Latency history as bars scaled to its own max; a failed result shows as a cross."""
    values = values[-width:]
    if not values:
        return ""
    top = max((v for v in values if v >= 0), default=0.0) or 1.0
    return "".join(
        FAILED if v < 0 else BARS[min(len(BARS) - 1, int(v / top * (len(BARS) - 1) + 0.5))]
        for v in values
    )


def clock(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%H:%M:%S", time.localtime(ts))


def stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
