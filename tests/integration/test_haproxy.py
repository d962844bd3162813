"""HAProxy follows an HA group's primary through the agents' HTTP contract, and the console
drains and inspects its servers through the runtime API.

Real HAProxy, configured like deploy/haproxy/haproxy.cfg. The group's members are stand-ins
served from this process: a data port that greets each client with the member's name and
keeps the session open (as a database would), and an agent-like public listener whose
`/groups/pg/primary` and `/groups/pg/replica` answer 200 or 503 as the test decides, exactly
the contract the agent implements.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent.haproxy import HaproxyError, HaproxyRuntime, ServerState
from tests.support.haproxy import Backend, HaproxyProcess, Server
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

GROUP = "pg"
# Generous for loopback; with `inter 500ms fastinter 250ms fall 2 rise 1` a flip is
# normally followed within a second.
FAILOVER_DEADLINE = 5.0


class _DataServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _CheckServer(ThreadingHTTPServer):
    daemon_threads = True


class Member:
    """One group member as HAProxy sees it: a service port and the agent's routing endpoints."""

    def __init__(self, name: str, primary: bool = False) -> None:
        self.name = name
        self.primary = primary
        member = self

        class Greet(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(30)
                self.request.sendall(f"{member.name}\n".encode())
                with contextlib.suppress(OSError):
                    while self.request.recv(1024):
                        pass

        class Routing(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == f"/groups/{GROUP}/primary":
                    code = 200 if member.primary else 503
                elif self.path == f"/groups/{GROUP}/replica":
                    code = 503 if member.primary else 200
                else:
                    code = 404
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.data = _DataServer(("127.0.0.1", 0), Greet)
        self.check = _CheckServer(("127.0.0.1", 0), Routing)
        self._threads = [
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            for s in (self.data, self.check)
        ]
        for t in self._threads:
            t.start()

    @property
    def server(self) -> Server:
        return Server(self.name, self.data.server_address[1], self.check.server_address[1])

    def stop(self) -> None:
        for s in (self.data, self.check):
            s.shutdown()
            s.server_close()


@pytest.fixture
def members() -> Iterator[dict[str, Member]]:
    """Members pg-1..pg-3; pg-2 is the primary."""
    made = {name: Member(name, primary=name == "pg-2") for name in ("pg-1", "pg-2", "pg-3")}
    yield made
    for m in made.values():
        m.stop()


@pytest.fixture
def haproxy(
    members: dict[str, Member], start_haproxy: Callable[[Sequence[Backend]], HaproxyProcess]
) -> HaproxyProcess:
    servers = [m.server for m in members.values()]
    return start_haproxy(
        [
            Backend("pg_primary", f"/groups/{GROUP}/primary", servers),
            Backend("pg_replicas", f"/groups/{GROUP}/replica", servers),
        ]
    )


def greeting(port: int) -> str | None:
    """Connect through HAProxy; the name of the member that answered, or None when HAProxy
    had no server to send the connection to (it closes it)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.makefile("rb").readline().decode().strip() or None
    except OSError:
        return None


def greetings(port: int, n: int = 8) -> set[str | None]:
    return {greeting(port) for _ in range(n)}


def session(port: int) -> socket.socket:
    """A client session that stays open, like a database connection; greeted already."""
    return sessions_on(port, 1)[0][1]


def sessions_on(port: int, n: int) -> list[tuple[str, socket.socket]]:
    """`n` open client sessions, each with the name of the member it reached."""
    made = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        made.append((s.makefile("rb").readline().decode().strip(), s))
    return made


def closed(s: socket.socket) -> bool:
    """Whether the other side has ended the session (without blocking for long)."""
    s.settimeout(0.05)
    try:
        return s.recv(64) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def server(runtime: HaproxyRuntime, backend: str, name: str) -> ServerState:
    return next(s for s in runtime.servers(backend) if s.name == name)


def settled(runtime: HaproxyRuntime, backend: str, up: list[str]) -> Callable[[], bool]:
    return lambda: runtime.up_servers(backend) == up


def test_clients_follow_the_primary_and_a_demoted_primary_loses_its_sessions(
    haproxy: HaproxyProcess, members: dict[str, Member]
) -> None:
    runtime = haproxy.runtime
    primary_port = haproxy.backend("pg_primary").port
    replicas_port = haproxy.backend("pg_replicas").port
    # HAProxy 2.6 starts every server UP until its first check: wait for the checks.
    wait_for(settled(runtime, "pg_primary", ["pg-2"]), FAILOVER_DEADLINE, "first checks")
    wait_for(settled(runtime, "pg_replicas", ["pg-1", "pg-3"]), FAILOVER_DEADLINE, "replicas")

    assert greetings(primary_port) == {"pg-2"}
    assert greetings(replicas_port) == {"pg-1", "pg-3"}
    by_name = {s.name: s for s in runtime.servers("pg_primary")}
    assert by_name["pg-2"].check_status == "L7OK" and by_name["pg-2"].check_code == 200
    assert by_name["pg-1"].check_status == "L7STS" and by_name["pg-1"].check_code == 503
    assert by_name["pg-1"].operational == "DOWN" and by_name["pg-1"].admin == "ready"

    timings = [
        flip(haproxy, members, old, new)
        for old, new in (("pg-2", "pg-1"), ("pg-1", "pg-3"), ("pg-3", "pg-2"))
    ]
    print()
    for line in timings:
        print(line)


def flip(haproxy: HaproxyProcess, members: dict[str, Member], old: str, new: str) -> str:
    """Move the primary from `old` to `new` as the agents would (one answers 503, the other
    200) and wait until HAProxy follows: new connections go to `new` only, and the session
    a client had on `old` is cut. Returns how long each took."""
    runtime = haproxy.runtime
    port = haproxy.backend("pg_primary").port
    client = session(port)
    members[old].primary = False
    members[new].primary = True
    flipped = time.monotonic()
    wait_for(lambda: greeting(port) == new, FAILOVER_DEADLINE, f"routing to {new}")
    first_routed = time.monotonic() - flipped
    wait_for(settled(runtime, "pg_primary", [new]), FAILOVER_DEADLINE, f"{old} marked down")
    old_down = time.monotonic() - flipped
    wait_for(lambda: closed(client), FAILOVER_DEADLINE, f"the session on {old} to be cut")
    cut = time.monotonic() - flipped
    client.close()
    assert greetings(port) == {new}
    # The demoted member is a replica now: HAProxy sends readers there too.
    replicas = sorted(set(members) - {new})
    wait_for(settled(runtime, "pg_replicas", replicas), FAILOVER_DEADLINE, f"replicas {replicas}")
    return (
        f"failover {old}->{new}: first connection to {new} after {first_routed:.3f}s, "
        f"{old} marked down after {old_down:.3f}s, its session cut after {cut:.3f}s"
    )


def test_drain_maint_and_ready_change_what_haproxy_reports_and_where_clients_go(
    haproxy: HaproxyProcess, members: dict[str, Member]
) -> None:
    runtime = haproxy.runtime
    port = haproxy.backend("pg_replicas").port
    wait_for(settled(runtime, "pg_replicas", ["pg-1", "pg-3"]), FAILOVER_DEADLINE, "replicas")
    readers = dict(sessions_on(port, 2))  # one on each (round robin)
    assert sorted(readers) == ["pg-1", "pg-3"]

    runtime.set_state("pg_replicas", "pg-1", "drain")
    pg1 = server(runtime, "pg_replicas", "pg-1")
    assert (pg1.operational, pg1.admin, pg1.status) == ("DRAIN", "drain", "DRAIN")
    assert runtime.up_servers("pg_replicas") == ["pg-3"]
    assert greetings(port) == {"pg-3"}
    assert not closed(readers["pg-1"]), "drain keeps the sessions a server has"

    runtime.set_state("pg_replicas", "pg-3", "maint")
    states = {s.name: s for s in runtime.servers("pg_replicas")}
    assert (states["pg-3"].operational, states["pg-3"].admin) == ("MAINT", "maint")
    assert states["pg-3"].check_status == "", "checks stop in maintenance"
    assert runtime.up_servers("pg_replicas") == []
    assert greetings(port, 3) == {None}, "no server left: HAProxy closes the connection"
    # Maintenance marks the server down, so `on-marked-down shutdown-sessions` applies.
    wait_for(lambda: closed(readers["pg-3"]), FAILOVER_DEADLINE, "pg-3's session to be cut")
    assert not closed(readers["pg-1"])

    runtime.set_state("pg_replicas", "pg-1", "ready")
    assert runtime.up_servers("pg_replicas") == ["pg-1"]
    assert greetings(port) == {"pg-1"}

    runtime.set_state("pg_replicas", "pg-3", "ready")
    wait_for(settled(runtime, "pg_replicas", ["pg-1", "pg-3"]), FAILOVER_DEADLINE, "pg-3 back")
    assert greetings(port) == {"pg-1", "pg-3"}

    # A drained server whose checks then fail: HAProxy shows DOWN, the drain is still set.
    runtime.set_state("pg_replicas", "pg-3", "drain")
    members["pg-3"].primary = True  # its replica endpoint now answers 503
    wait_for(
        lambda: server(runtime, "pg_replicas", "pg-3").operational == "DOWN",
        FAILOVER_DEADLINE,
        "pg-3 to fail its checks",
    )
    pg3 = server(runtime, "pg_replicas", "pg-3")
    assert (pg3.admin, pg3.check_status, pg3.check_code) == ("drain", "L7STS", 503)
    for r in readers.values():
        r.close()


def test_back_from_maintenance_through_drain_never_routes_to_a_standby(
    haproxy: HaproxyProcess,
) -> None:
    """Leaving maint for ready, HAProxy 2.6 counts a server UP until its next check (up to
    `inter`). Through drain, the check judges it before it can get a connection."""
    runtime = haproxy.runtime
    wait_for(settled(runtime, "pg_primary", ["pg-2"]), FAILOVER_DEADLINE, "first checks")
    runtime.set_state("pg_primary", "pg-1", "maint")
    runtime.set_state("pg_primary", "pg-1", "drain")
    assert runtime.up_servers("pg_primary") == ["pg-2"]
    # `DRAIN 1/2` until a check has run: then `DRAIN` (passed) or `DOWN` (failed).
    wait_for(
        lambda: server(runtime, "pg_primary", "pg-1").status in ("DRAIN", "DOWN"),
        FAILOVER_DEADLINE,
        "a check of pg-1 after maintenance",
    )
    runtime.set_state("pg_primary", "pg-1", "ready")
    assert runtime.up_servers("pg_primary") == ["pg-2"]
    assert greetings(haproxy.backend("pg_primary").port) == {"pg-2"}


def test_names_cannot_inject_commands_and_haproxy_refusals_are_errors(
    haproxy: HaproxyProcess,
) -> None:
    runtime = haproxy.runtime
    wait_for(settled(runtime, "pg_primary", ["pg-2"]), FAILOVER_DEADLINE, "first checks")

    for backend, server in (
        ("pg_primary", "pg-2\nset server pg_primary/pg-2 state maint"),
        ("pg_primary", "pg-1; set server pg_primary/pg-2 state maint"),
        ("pg_primary pg_replicas", "pg-2"),
        ("pg_primary", ""),
    ):
        with pytest.raises(HaproxyError, match="not sent: invalid") as err:
            runtime.set_state(backend, server, "maint")
        assert err.value.socket_path == haproxy.socket_path
        assert err.value.command.startswith("set server ")
    with pytest.raises(HaproxyError, match="invalid backend name"):
        runtime.servers("pg_primary;show info")
    with pytest.raises(HaproxyError, match="unknown state"):
        runtime.set_state("pg_primary", "pg-2", "stop")  # type: ignore[arg-type]
    assert [(s.name, s.admin) for s in runtime.servers("pg_primary")] == [
        ("pg-1", "ready"),
        ("pg-2", "ready"),
        ("pg-3", "ready"),
    ]
    assert runtime.up_servers("pg_primary") == ["pg-2"]

    with pytest.raises(HaproxyError, match=r"No such server\.") as err:
        runtime.set_state("pg_primary", "pg-9", "drain")
    assert str(haproxy.socket_path) in str(err.value)
    assert "set server pg_primary/pg-9 state drain" in str(err.value)
    with pytest.raises(HaproxyError, match=r"No such proxy\."):
        runtime.servers("pg_nope")
    with pytest.raises(HaproxyError, match="no such socket"):
        HaproxyRuntime(haproxy.socket_path.with_name("missing.sock")).servers("pg_primary")
