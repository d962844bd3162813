"""Fixtures that start real components for the integration tests, and stop them afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.etcd import EtcdServer, require_etcd
from tests.support.haproxy import Backend, HaproxyProcess, require_haproxy
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


@pytest.fixture(scope="session")
def shared_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One real etcd for the whole session, for tests that only read and write keys.

    Tests keep apart by using a prefix of their own. Do not stop it: use `etcd` for that.
    """
    require_etcd()
    server = EtcdServer(tmp_path_factory.mktemp("etcd-shared"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """A real single-member etcd of the test's own on 127.0.0.1, free ports, fresh data.

    Function scope: tests stop, kill, freeze and restart it (`start()` again brings the
    same member back on the same ports with the same data).
    """
    require_etcd()
    server = EtcdServer(tmp_path / "etcd")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def start_haproxy(tmp_path: Path) -> Iterator[Callable[[Sequence[Backend]], HaproxyProcess]]:
    """Starts a real HAProxy on 127.0.0.1 for the given backends (each behind a TCP frontend
    on a free port, servers HTTP-checked as in deploy/haproxy/haproxy.cfg), admin socket in
    the test's temporary directory; all are stopped afterwards."""
    require_haproxy()
    started: list[HaproxyProcess] = []

    def start(backends: Sequence[Backend]) -> HaproxyProcess:
        proc = HaproxyProcess(tmp_path / f"haproxy-{len(started)}", backends)
        started.append(proc)
        return proc.start()

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()
