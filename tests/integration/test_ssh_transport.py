"""The console's SSH transport against a real OpenSSH sshd and a real agent behind it."""

from __future__ import annotations

import getpass
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent.schema import HostStatus
from console.inventory import Jump, SshTarget
from console.transport import HostKeyError, TransportError
from console.transport.ssh import SshTransport
from tests.support.sshd import SshServer, fingerprint, keygen
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

TIMEOUT = 2.0


@pytest.fixture
def agent(start_agent):
    # The state dir (and so the token file) is under tmp_path, owned by the test user,
    # who is also the user sshd logs in: `cat` over SSH can read it.
    return start_agent(
        {
            "probes": {
                "disk": {
                    "kind": "disk",
                    "path": "/",
                    "min_free": "1MiB",
                    "interval": "1s",
                    "timeout": "500ms",
                }
            }
        }
    )


@pytest.fixture
def connect(sshd: SshServer, agent) -> Iterator[Callable[..., SshTransport]]:
    """Makes transports to the agent through sshd; every one is closed afterwards."""
    made: list[SshTransport] = []

    def make(**overrides: Any) -> SshTransport:
        fields: dict[str, Any] = {
            "address": "127.0.0.1",
            "port": sshd.port,
            "user": sshd.user,
            "key_file": sshd.user_key,
            "known_hosts": sshd.known_hosts,
            "token_file": agent.state_dir / "token",
        }
        fields.update(overrides)
        t = SshTransport("web-1", SshTarget(**fields), agent.port, connect_timeout=TIMEOUT)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


def status_ok(t: SshTransport) -> bool:
    try:
        return t.request("GET", "/api/v1/status", timeout=TIMEOUT).status == 200
    except TransportError:
        return False


def test_status_through_the_tunnel(connect, sshd):
    t = connect()
    assert t.describe == f"ssh {sshd.user}@127.0.0.1:{sshd.port}"
    r = t.request("GET", "/api/v1/status", timeout=TIMEOUT)
    assert r.status == 200
    status = HostStatus.model_validate(r.json_or_text())
    assert status.host == "test-host"
    assert [p.name for p in status.probes] == ["disk"]


def test_token_read_over_ssh_authorizes_an_action(connect, agent):
    t = connect()
    token = t.read_token(TIMEOUT)
    assert token == agent.token
    r = t.request(
        "POST",
        "/api/v1/probes/disk/run",
        body={"reason": "test"},
        headers={"Authorization": f"Bearer {token}", "X-Hadeck-Actor": "alice"},
        timeout=10,
    )
    assert r.status == 200, r.body
    assert r.json_or_text()["actor"] == "alice"
    record = agent.get("/api/v1/audit")[-1]
    assert (record["actor"], record["action"], record["target"]) == ("alice", "run_probe", "disk")
    assert record["params"] == {"reason": "test"}


def test_missing_token_file_says_what_to_check(connect, tmp_path):
    t = connect(token_file=tmp_path / "no such dir" / "token")
    with pytest.raises(TransportError, match="No such file") as err:
        t.read_token(TIMEOUT)
    assert "token_file" in str(err.value)


def test_one_connection_serves_concurrent_workers(connect, sshd):
    t = connect()
    results: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(3):
                results.append(t.request("GET", "/api/v1/status", timeout=10).status)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    assert results == [200] * 24
    assert sshd.logins() == 1


def test_unknown_host_key_is_refused_with_its_fingerprint(connect, sshd, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    t = connect(known_hosts=empty)
    with pytest.raises(HostKeyError) as err:
        t.request("GET", "/api/v1/status", timeout=TIMEOUT)
    message = str(err.value)
    assert sshd.host_fingerprint in message
    assert "web-1" in message and f"[127.0.0.1]:{sshd.port}" in message
    assert "ssh-ed25519" in message and "ssh-keyscan" in message
    assert sshd.logins() == 0
    # Still refused (fast) while backing off: never accepted on a second try.
    with pytest.raises(HostKeyError, match="next attempt in"):
        t.request("GET", "/api/v1/status", timeout=TIMEOUT)


def test_changed_host_key_is_refused_showing_both_fingerprints(connect, sshd, tmp_path):
    other = keygen(tmp_path / "other_host_key", "impostor").with_suffix(".pub")
    known = sshd.write_known_hosts(tmp_path / "changed_known_hosts", other)
    t = connect(known_hosts=known)
    with pytest.raises(HostKeyError) as err:
        t.request("GET", "/api/v1/status", timeout=TIMEOUT)
    message = str(err.value)
    assert "CHANGED" in message
    assert fingerprint(other) in message and sshd.host_fingerprint in message
    assert sshd.logins() == 0


def test_wrong_user_key_is_refused_naming_the_login(connect, sshd, tmp_path):
    stranger = keygen(tmp_path / "id_stranger", "stranger")
    t = connect(key_file=stranger)
    with pytest.raises(TransportError) as err:
        t.request("GET", "/api/v1/status", timeout=TIMEOUT)
    assert not isinstance(err.value, HostKeyError)
    assert f"{sshd.user}@127.0.0.1" in str(err.value)
    assert "refused" in str(err.value)


def test_through_a_jump_host(connect, sshd):
    jump = Jump(address="127.0.0.1", port=sshd.port, user=sshd.user, key_file=sshd.user_key)
    t = connect(jump=jump)
    assert t.describe.endswith(f" via {sshd.user}@127.0.0.1:{sshd.port}")
    r = t.request("GET", "/api/v1/status", timeout=TIMEOUT)
    assert HostStatus.model_validate(r.json_or_text()).host == "test-host"
    assert t.read_token(TIMEOUT)
    assert sshd.logins() == 2  # the jump, then the host through it


def test_jump_host_key_is_checked_too(connect, sshd, tmp_path):
    other = keygen(tmp_path / "other_host_key", "impostor").with_suffix(".pub")
    known = sshd.write_known_hosts(tmp_path / "changed_known_hosts", other)
    jump = Jump(address="127.0.0.1", port=sshd.port, user=sshd.user, key_file=sshd.user_key)
    with pytest.raises(HostKeyError, match="jump host"):
        connect(jump=jump, known_hosts=known).request("GET", "/api/v1/status", timeout=TIMEOUT)


def test_agent_down_fails_fast_and_recovers(connect, agent, sshd):
    t = connect()
    assert status_ok(t)
    agent.stop()
    started = time.monotonic()
    with pytest.raises(TransportError, match="agent is not answering"):
        t.request("GET", "/api/v1/status", timeout=10)
    assert time.monotonic() - started < 2  # refused at once, not at the 10 s timeout
    agent.start()
    wait_for(lambda: status_ok(t), 20, "the same transport to reach the restarted agent")
    assert sshd.logins() == 1  # the SSH connection survived; only the tunnel failed


def test_hung_agent_times_out(connect, agent):
    t = connect()
    assert status_ok(t)
    agent.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(TransportError, match="did not answer"):
            t.request("GET", "/api/v1/status", timeout=1)
        assert time.monotonic() - started < 3
    finally:
        agent.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: status_ok(t), 20, "the agent to answer again")


def test_sshd_killed_fails_without_hanging_then_reconnects(connect, sshd):
    t = connect()
    assert status_ok(t)
    sshd.kill()
    started = time.monotonic()
    with pytest.raises(TransportError):
        t.request("GET", "/api/v1/status", timeout=TIMEOUT)
    assert time.monotonic() - started < 3 * TIMEOUT
    # The next attempts back off: within the backoff they fail at once and say when the
    # next try is. The first backoff is short (0.5 s); on a busy machine it may be over
    # before the next call, which then tries, fails, and doubles it.
    for _ in range(4):
        started = time.monotonic()
        with pytest.raises(TransportError) as failed:
            t.request("GET", "/api/v1/status", timeout=TIMEOUT)
        if "next attempt in" in str(failed.value):
            assert time.monotonic() - started < 0.5
            break
        assert "connection refused" in str(failed.value)
    else:
        pytest.fail(f"no backoff after four failed connects: {failed.value}")
    sshd.start()
    wait_for(lambda: status_ok(t), 30, "the transport to reconnect to the restarted sshd")
    assert sshd.logins() == 2


def test_frozen_sshd_times_out_instead_of_hanging(connect, sshd):
    t = connect()
    assert status_ok(t)

    def fails_within_bound(call: Callable[[], object], match: str) -> None:
        started = time.monotonic()
        with pytest.raises(TransportError, match=match):
            call()
        assert time.monotonic() - started < 3 * TIMEOUT

    frozen = sshd.freeze()
    try:
        # The open connection: sshd never confirms the tunnel, so it is given up.
        fails_within_bound(
            lambda: t.request("GET", "/api/v1/status", timeout=TIMEOUT), "stopped answering"
        )
        # A fresh connection: the kernel accepts it, but no SSH banner ever comes.
        fails_within_bound(lambda: t.read_token(TIMEOUT), "handshake failed")
        # Then the host is in backoff: calls fail at once.
        fails_within_bound(
            lambda: t.request("GET", "/api/v1/status", timeout=TIMEOUT), "next attempt in"
        )
    finally:
        sshd.thaw(frozen)
    wait_for(lambda: status_ok(t), 30, "the transport to work again once sshd is thawed")


def test_closed_transport_refuses(connect):
    t = connect()
    assert status_ok(t)
    t.close()
    with pytest.raises(TransportError, match="closed"):
        t.request("GET", "/api/v1/status", timeout=TIMEOUT)


def test_describe_without_user_is_the_login_name_and_nothing_connects_early():
    t = SshTransport("h", SshTarget(address="192.0.2.1"), 9440)  # TEST-NET: unroutable
    assert t.describe == f"ssh {getpass.getuser()}@192.0.2.1:22"
    t.close()
