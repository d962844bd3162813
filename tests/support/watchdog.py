"""A stand-in watchdog device: a FIFO that records kicks and fires as the kernel would.

The fencing process writes `timeout=N` first (a FIFO takes no ioctl), then any byte
kicks and `V` before a close disarms, as with Linux's /dev/watchdog. Opening arms it;
a close without `V` leaves it counting; N seconds without a kick while armed is a
fire, recorded with its time, and `on_fire` runs (a test kills the "host" there). A
real watchdog is never armed by the tests.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class StandInWatchdog:
    path: Path
    on_fire: Callable[[], None] = lambda: None
    kicks: list[float] = field(default_factory=list)
    fired: list[float] = field(default_factory=list)
    #: (time, "armed" | "disarmed" | "fired") as they happened.
    changes: list[tuple[float, str]] = field(default_factory=list)
    timeout: float | None = None

    def __post_init__(self) -> None:
        os.mkfifo(self.path, 0o600)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StandInWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(3)

    @property
    def armed(self) -> bool:
        return bool(self.changes) and self.changes[-1][1] == "armed"

    def _run(self) -> None:
        # Held open for reading (non-blocking), so a writer's open succeeds; a write end
        # of its own keeps EOF away between writers (a close is not a disarm: `V` is).
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        keep = os.open(self.path, os.O_WRONLY)
        last_kick = 0.0
        line = b""  # the `timeout=N` line each new writer starts with
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([fd], [], [], 0.02)
                now = time.time()
                data = b""
                if ready:
                    with contextlib.suppress(BlockingIOError):
                        data = os.read(fd, 4096)
                if data and not self.armed:
                    self.changes.append((now, "armed"))
                    line, self.timeout = b"", None
                if data and self.timeout is None:
                    line += data
                    if b"\n" not in line:
                        continue
                    head, _, data = line.partition(b"\n")
                    self.timeout = float(head.split(b"=")[1])
                    last_kick = now
                if data:  # any write kicks; `V` then a close disarms
                    last_kick = now
                    self.kicks.extend([now] * len(data.replace(b"V", b"")))
                    if data.endswith(b"V"):
                        self.changes.append((now, "disarmed"))
                if self.armed and self.timeout is not None and now - last_kick >= self.timeout:
                    self.fired.append(now)
                    self.changes.append((now, "fired"))
                    self.on_fire()
        finally:
            os.close(fd)
            os.close(keep)
