"""Fixtures that start real components for the integration tests, and stop them afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from console.demo.component import stop_all
from tests.support.agent import AgentProcess, DemoService
from tests.support.etcd import EtcdServer, require_etcd
from tests.support.groups import Member, Start, member_config
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


@pytest.fixture(params=["sqlite", "etcd"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Every scenario runs on both lease stores: SQLite (one machine) and a real etcd."""
    if request.param == "etcd":
        server: EtcdServer = request.getfixturevalue("etcd")
        return {"kind": "etcd", "endpoints": [server.url], "timeout": "1s"}
    return {"kind": "sqlite", "path": str(tmp_path / "leases.db"), "timeout": "1s"}


@pytest.fixture
def group(tmp_path: Path, store: dict[str, Any]) -> Iterator[Start]:
    started: list[Member] = []
    default_store = store

    def start(
        n: int = 3,
        store: dict[str, Any] | None = None,
        each: list[dict[str, Any]] | None = None,
        **kw: Any,
    ) -> list[Member]:
        """`each`: member_config's arguments member by member (`store`: its own path to
        etcd, say), over `kw`, which all share."""
        each = each or [{}] * n
        members = []
        for i in range(n):
            name = f"m{i + 1}"
            d = tmp_path / name
            d.mkdir()
            svc = DemoService(d)
            svc.start()
            args = {"store": store or default_store, "priority": 100 - i, **kw, **each[i]}
            cfg = member_config(name, d, svc, **args)
            m = Member(name, AgentProcess(d, cfg), svc)
            started.append(m)
            members.append(m)
        for m in members:
            m.agent.start()
        return members

    yield start
    errors = stop_all(m.agent.component for m in started)  # thawed first, if frozen
    for m in started:
        m.service.stop()
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)
