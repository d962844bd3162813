"""HAProxy's runtime API, over its UNIX stats socket: which servers route clients, and drain.

HAProxy follows an HA group's primary by itself (an HTTP check on each member agent's
`/groups/<group>/primary`, see deploy/haproxy/). The console reads what HAProxy decided and
sets a server's administrative state (ready, drain, maint) for planned work; the agent of
a new primary takes the old primary out (agent/failover/routing_fence.py).

One command per connection, as HAProxy's non-interactive mode expects: send the line, read
the answer until HAProxy closes. Connect and the whole read are bounded by `timeout`, so a
wedged HAProxy costs the caller a few seconds, never a frozen worker. Blocking, like the
console's transports: call it from a worker thread.

The runtime API runs a line as several commands when they are separated by `;` or a newline,
at admin level. Backend and server names are therefore checked against HAProxy's own rule
for names (letters, digits, `.`, `_`, `-`, `:`) before they go into a command line.
"""

from __future__ import annotations

import csv
import io
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

AdminState = Literal["ready", "drain", "maint"]
"""What an operator sets: `ready` takes traffic when checks pass, `drain` takes no new
connections but keeps its sessions (and its checks), `maint` is out (checks stop too)."""

Operational = Literal["UP", "DOWN", "MAINT", "DRAIN", "NOLB"]
"""What HAProxy does with the server now. `UP` gets new connections (also while a failed
check is counting towards `fall`); `DRAIN` and `NOLB` keep their sessions and get no new
ones; `DOWN` failed its checks; `MAINT` was set so (or its address did not resolve)."""

_NAME = re.compile(r"[A-Za-z0-9._:-]{1,256}")
# Bits of `srv_admin_state` in `show servers state` (HAProxy's enum srv_admin): forced,
# inherited (track), configured (`disabled`) and DNS-resolution maintenance; forced and
# inherited drain. 0x40 only says the FQDN was set at runtime.
_ADMIN_MAINT = 0x01 | 0x02 | 0x04 | 0x20
_ADMIN_DRAIN = 0x08 | 0x10
_MAX_ANSWER = 16 * 1024 * 1024


class HaproxyError(Exception):
    """A runtime API command failed: the socket, the command and what went wrong."""

    def __init__(self, socket_path: Path, command: str, problem: str) -> None:
        super().__init__(f"HAProxy at {socket_path}: {command!r}: {problem}")
        self.socket_path = socket_path
        self.command = command
        self.problem = problem


@dataclass(frozen=True)
class ServerState:
    """One server of a backend as HAProxy sees it now."""

    backend: str
    name: str
    #: `ip:port` where clients are sent.
    address: str
    operational: Operational
    admin: AdminState
    #: HAProxy's status text as its stats page shows it: `UP`, `UP 1/2` (one failed check
    #: so far, still routed), `DOWN`, `DOWN 1/2`, `DRAIN`, `MAINT`, `no check`...
    status: str
    #: Result of the last completed check: `L7OK`, `L7STS` (wrong HTTP status), `L4CON`
    #: (connection refused), `L4TOUT`, `L7TOUT`...; empty while checks are off (maint).
    check_status: str
    #: HTTP status of the last check, if it got one.
    check_code: int | None
    #: The server's current weight; an `UP` server of weight 0 gets no new connections.
    weight: int
    #: Sessions open to it now (what a drain waits for).
    sessions: int

    @property
    def up(self) -> bool:
        return self.operational == "UP"


class HaproxyRuntime:
    """The runtime API of one HAProxy, through the stats socket at `socket_path`.

    The socket needs `level admin` for `set_state` (`level operator` reads only).
    """

    def __init__(self, socket_path: Path | str, timeout: float = 3.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout

    def command(self, line: str) -> str:
        """Run one command; its answer, with HAProxy's terminating empty line removed.

        The line is sent as given: callers building it from names check them first.
        """
        if "\n" in line or "\r" in line:
            raise HaproxyError(self.socket_path, line, "a command is one line")
        deadline = time.monotonic() + self.timeout
        chunks: list[bytes] = []
        size = 0
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.socket_path))
                sock.sendall(line.encode() + b"\n")
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    sock.settimeout(left)
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > _MAX_ANSWER:
                        raise HaproxyError(
                            self.socket_path, line, f"answer larger than {_MAX_ANSWER} bytes"
                        )
        except FileNotFoundError:
            raise HaproxyError(
                self.socket_path,
                line,
                "no such socket: is HAProxy running, with this path in its `stats socket` line?",
            ) from None
        except PermissionError:
            raise HaproxyError(
                self.socket_path,
                line,
                "permission denied: the socket is group-writable only (mode 660); "
                "run as a member of its group",
            ) from None
        except ConnectionRefusedError:
            raise HaproxyError(
                self.socket_path, line, "connection refused: a stale socket, HAProxy is not running"
            ) from None
        except TimeoutError:
            raise HaproxyError(
                self.socket_path, line, f"no complete answer within {self.timeout:g}s"
            ) from None
        except OSError as exc:
            raise HaproxyError(self.socket_path, line, exc.strerror or str(exc)) from None
        return b"".join(chunks).decode(errors="replace").removesuffix("\n\n").rstrip("\n")

    def servers(self, backend: str) -> list[ServerState]:
        """The servers of `backend`, in configuration order.

        Two commands: `show stat` for what HAProxy does (status, checks, weight, sessions)
        and `show servers state` for what an operator set (a drained server whose checks
        fail shows `DOWN` in the first and is still drained in the second). A server that
        appears in only one of them (a reload in between) is left out.
        """
        stat_cmd = f"show stat {backend} 4 -1"
        _check_name(self.socket_path, stat_cmd, "backend", backend)
        stat = self.command(stat_cmd)
        if not stat.startswith("# pxname,"):
            raise HaproxyError(self.socket_path, stat_cmd, _problem(stat))
        state_cmd = f"show servers state {backend}"
        admin = _admin_states(self.socket_path, state_cmd, self.command(state_cmd))
        found: list[ServerState] = []
        for row in csv.DictReader(io.StringIO(stat.removeprefix("# "))):
            name = row.get("svname", "")
            if row.get("pxname") != backend or name in ("FRONTEND", "BACKEND", ""):
                continue
            if name not in admin:
                continue
            status = row.get("status", "")
            found.append(
                ServerState(
                    backend=backend,
                    name=name,
                    address=row.get("addr", ""),
                    operational=_operational(status),
                    admin=admin[name],
                    status=status,
                    check_status=row.get("check_status", "").removeprefix("* "),
                    check_code=_int_or_none(row.get("check_code", "")),
                    weight=_int_or_none(row.get("weight", "")) or 0,
                    sessions=_int_or_none(row.get("scur", "")) or 0,
                )
            )
        return found

    def up_servers(self, backend: str) -> list[str]:
        """Names of the servers that HAProxy sends new connections of `backend` to now: checks
        passing and admin state ready (for `pg_primary`, the primary as HAProxy sees it)."""
        return [s.name for s in self.servers(backend) if s.up and s.weight > 0]

    def set_state(self, backend: str, server: str, state: AdminState) -> None:
        """Set a server's administrative state (`set server <backend>/<server> state <state>`).

        Leaving `maint` for `ready`, HAProxy 2.6 counts the server UP before its first check
        (which it runs at once): to never route to it before that check, go `maint` ->
        `drain`, wait for a check result, then `ready`.
        """
        line = f"set server {backend}/{server} state {state}"
        _check_name(self.socket_path, line, "backend", backend)
        _check_name(self.socket_path, line, "server", server)
        if state not in get_args(AdminState):
            raise HaproxyError(
                self.socket_path,
                line,
                f"not sent: unknown state {state!r}, expected one of "
                f"{', '.join(get_args(AdminState))}",
            )
        answer = self.command(line)
        if answer.strip():
            raise HaproxyError(self.socket_path, line, _problem(answer))


def _check_name(socket_path: Path, command: str, what: str, name: str) -> None:
    """Refuse a name HAProxy could not have in its config (and that could smuggle a second
    command in with `;` or a newline) before anything is sent."""
    if not _NAME.fullmatch(name):
        raise HaproxyError(
            socket_path,
            command,
            f"not sent: invalid {what} name {name!r} (HAProxy names are letters, digits, "
            "'.', '_', '-' and ':')",
        )


def _problem(answer: str) -> str:
    text = " ".join(answer.split())
    return text[:300] if text else "empty answer"


def _operational(status: str) -> Operational:
    # `UP 1/2`, `DOWN (agent)`, `MAINT (via b/s)`: the first word is the state. An unchecked
    # server (`no check`) is routed to as long as it is not in maint.
    if status == "no check":
        return "UP"
    return _OPERATIONAL.get(status.split(" ", 1)[0], "DOWN")


_OPERATIONAL: dict[str, Operational] = {s: s for s in get_args(Operational)}


def _admin_states(socket_path: Path, command: str, answer: str) -> dict[str, AdminState]:
    """Server name -> admin state, from `show servers state` (version 1 of its format)."""
    lines = answer.splitlines()
    if len(lines) < 2 or lines[0].strip() != "1" or not lines[1].startswith("# "):
        raise HaproxyError(socket_path, command, _problem(answer))
    columns = lines[1].removeprefix("# ").split()
    try:
        name_at, admin_at = columns.index("srv_name"), columns.index("srv_admin_state")
    except ValueError:
        raise HaproxyError(
            socket_path, command, f"unexpected columns: {' '.join(columns)}"
        ) from None
    states: dict[str, AdminState] = {}
    for line in lines[2:]:
        fields = line.split()
        if len(fields) <= max(name_at, admin_at):
            continue
        bits = _int_or_none(fields[admin_at])
        if bits is None:
            raise HaproxyError(socket_path, command, f"unexpected line: {line}")
        states[fields[name_at]] = (
            "maint" if bits & _ADMIN_MAINT else "drain" if bits & _ADMIN_DRAIN else "ready"
        )
    return states


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
