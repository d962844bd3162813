"""A small real filesystem of a test's own, which the test fills up and frees again.

A disk that is full is a real kernel condition (ENOSPC, short writes, SQLite's
"database or disk is full"), so the tests that need one mount a tmpfs of a few
hundred KiB and fill it with a ballast file, instead of pretending with a mock.
Mounting needs root (CAP_SYS_ADMIN); without it the test skips on a laptop and
fails under CI=true, as a missing component does.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.components import unavailable
from tests.support.wait import wait_for


class SmallFilesystem:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.ballast = path / "ballast"

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self) -> None:
        """Write ballast until the kernel answers ENOSPC: not one more page is free."""
        chunk = b"\0" * 4096
        with self.ballast.open("ab", buffering=0) as fh:
            while True:
                try:
                    fh.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        # A short write leaves nothing: try single bytes until the last page is taken too.
        with self.ballast.open("ab", buffering=0) as fh:
            while True:
                try:
                    fh.write(b"\0")
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        assert self.free_bytes() == 0

    def free(self) -> None:
        self.ballast.unlink(missing_ok=True)


def _mount_failure(message: str) -> None:
    unavailable(
        f"cannot mount a small tmpfs for a full-disk test ({message}): run the tests as root"
    )


@contextmanager
def small_filesystem(path: Path, size: str = "1m") -> Iterator[SmallFilesystem]:
    """A tmpfs of `size` at `path`, unmounted afterwards (lazily if something still has a
    file open on it, so the mount never outlives the test)."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _mount_failure(str(exc))
    if proc.returncode != 0:
        _mount_failure(proc.stderr.strip() or f"mount exited {proc.returncode}")
    try:
        yield SmallFilesystem(path)
    finally:
        done = subprocess.run(["umount", str(path)], capture_output=True, timeout=10)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True, timeout=10)
        wait_for(lambda: not os.path.ismount(path), 5, f"{path} to be unmounted")
