"""Fixtures that start real components for the integration tests, and stop them afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.sshd import SshServer, require_openssh


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    """A real OpenSSH sshd on 127.0.0.1 that lets the current user in with `sshd.user_key`.

    Function scope: tests kill and freeze it, and each gets fresh keys.
    """
    require_openssh()
    server = SshServer(tmp_path / "sshd")
    try:
        yield server.start()
    finally:
        server.stop()
