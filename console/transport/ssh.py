"""A remote agent, reached through SSH to its loopback-only API.

The full agent API listens on 127.0.0.1 only, so being allowed to act on a host
means being able to log into it (design.md, Security model). This transport logs
in with paramiko, opens a `direct-tcpip` channel to 127.0.0.1:<agent_port> on
the host (what `ssh -L` does, but without a local listening port that any other
user of the bastion could connect to) and speaks HTTP/1.1 over that channel. The
token is read with `cat` over the same session, so it only ever travels inside
the encrypted connection and is never written on the bastion.

What it guarantees:

- Host keys are checked against known_hosts and never auto-accepted. An unknown
  or changed key is a `HostKeyError` that names the host, shows the fingerprint
  the way OpenSSH does (`SHA256:...`) and says what to do.
- One SSH connection per host, shared by the console's worker threads; a lock
  makes sure only one of them connects. A connection that drops is replaced on
  the next call; failed connection attempts back off exponentially (0.5 s
  doubling to 30 s), and while backing off, calls fail at once with a message
  saying when the next attempt is, so a dead host costs the poller nothing.
- Every HTTP exchange ends within its `timeout`, measured from the moment a
  connection is there; setting a connection up is bounded separately by
  `connect_timeout` (per step: TCP, banner, key exchange, authentication),
  because a short poll timeout must not make a slow-but-working host unreachable.
- A hung agent or a hung sshd makes a call fail with `TransportError` at its
  deadline; it never blocks the worker thread for longer.
"""

from __future__ import annotations

import getpass
import http.client
import io
import json
import logging
import shlex
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import paramiko
from paramiko.ssh_exception import NoValidConnectionsError

from console.inventory import SshTarget
from console.transport.base import HostKeyError, Response, Transport, TransportError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger(__name__)

SYSTEM_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")
USER_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
#: A token is ~43 characters; anything much longer means token_file points at the wrong file.
MAX_TOKEN_BYTES = 4096

# Reason codes of a refused channel open (RFC 4254, section 5.1).
_ADMINISTRATIVELY_PROHIBITED = 1
_CONNECT_FAILED = 2

# What paramiko raises when a connection or channel fails below HTTP.
_SSH_ERRORS = (paramiko.SSHException, OSError, EOFError)


@dataclass(frozen=True)
class _Endpoint:
    """One SSH server to log into: the target host or its jump host."""

    address: str
    port: int
    user: str
    key_file: Path | None

    @property
    def known_hosts_name(self) -> str:
        """How OpenSSH (and so known_hosts) names this server."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    def __str__(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"


def fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as OpenSSH prints it: `SHA256:` + unpadded base64."""
    return str(key.fingerprint)


def _files(files: list[Path]) -> str:
    return ", ".join(str(f) for f in files)


class _RefuseUnknownHostKey(paramiko.MissingHostKeyPolicy):
    """paramiko asks this policy what to do with a host known_hosts does not list: refuse.

    Accepting a key on first use would let whoever answers first impersonate the
    host and receive the agent token; the operator has to verify it out of band.
    """

    def __init__(self, where: str, endpoint: _Endpoint, files: list[Path]) -> None:
        self.where = where
        self.endpoint = endpoint
        self.files = files

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        e = self.endpoint
        port = f"-p {e.port} " if e.port != 22 else ""
        raise HostKeyError(
            f"{self.where}: the SSH host key of {e.known_hosts_name} is not known "
            f"(looked in {_files(self.files)}), so the connection is refused. "
            f"The host offered a {key.get_name()} key {fingerprint(key)}. "
            "Verify that fingerprint out of band (on the host: "
            "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), then add the key: "
            f"`ssh-keyscan {port}{e.address} >> {self.files[0]}` "
            f"or log in once with `ssh {port}{e.user}@{e.address}` and answer yes."
        )


def _changed_key_error(
    where: str, endpoint: _Endpoint, files: list[Path], exc: paramiko.BadHostKeyException
) -> HostKeyError:
    got, expected = exc.key, exc.expected_key
    if got.get_name() == expected.get_name():
        what = f"{expected.get_name()} {fingerprint(expected)}"
    else:
        what = f"only {expected.get_name()} {fingerprint(expected)} (a different key type)"
    return HostKeyError(
        f"{where}: the SSH host key of {endpoint.known_hosts_name} has CHANGED, so the "
        f"connection is refused. known_hosts ({_files(files)}) has {what}; the host now offers "
        f"{got.get_name()} {fingerprint(got)}. Either the host was reinstalled or someone is "
        "intercepting the connection. Verify the new fingerprint out of band; only if it is "
        f"right, remove the old entry with `ssh-keygen -R '{endpoint.known_hosts_name}' "
        f"-f {files[0]}` and add the new key."
    )


class _Session:
    """One logged-in SSH connection to the host (and the jump host it runs through)."""

    def __init__(self, client: paramiko.SSHClient, jump: paramiko.SSHClient | None) -> None:
        self.client = client
        self.jump = jump

    def transport(self) -> paramiko.Transport | None:
        """The connection if it is still up, else None."""
        t = self.client.get_transport()
        if t is None or not t.is_active():
            return None
        if self.jump is not None:
            jt = self.jump.get_transport()
            if jt is None or not jt.is_active():
                return None
        return t

    def close(self) -> None:
        self.client.close()
        if self.jump is not None:
            self.jump.close()


class _ChannelSocket:
    """What http.client needs of a socket, on an SSH channel, with one deadline for the exchange.

    A per-read timeout alone would let an agent that trickles a byte a second hold
    the worker forever; re-arming the channel's timeout to what is left of the
    deadline before every read and write bounds the whole exchange.
    """

    def __init__(self, channel: paramiko.Channel, deadline: float) -> None:
        self.channel = channel
        self.deadline = deadline

    def arm(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        self.channel.settimeout(remaining)

    def sendall(self, data: bytes) -> None:
        self.arm()
        self.channel.sendall(data)

    def makefile(self, mode: str, *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_ChannelReader(self))

    def close(self) -> None:
        # http.client closes its "socket" as soon as it sees `Connection: close`,
        # before the body is read; the channel is closed by the caller instead.
        pass


class _ChannelReader(io.RawIOBase):
    def __init__(self, sock: _ChannelSocket) -> None:
        self.sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        self.sock.arm()
        view = memoryview(buffer).cast("B")
        data = self.sock.channel.recv(len(view))
        view[: len(data)] = data
        return len(data)


class _ChannelHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 on an already open channel; it never opens a TCP connection itself."""

    def __init__(self, sock: _ChannelSocket, agent_port: int) -> None:
        super().__init__("127.0.0.1", agent_port)
        self.sock = cast(socket.socket, sock)

    def connect(self) -> None:
        raise http.client.NotConnected("the SSH channel is gone")


class SshTransport(Transport):
    """One host's agent API through SSH; blocking, for the console's thread workers.

    Nothing happens in the constructor: the console builds one transport per
    inventory host at start-up and connects lazily from its workers.
    """

    def __init__(
        self,
        host: str,
        target: SshTarget,
        agent_port: int,
        *,
        connect_timeout: float = 5.0,
        keepalive: float = 15.0,
    ) -> None:
        self.host = host
        self.target = target
        self.agent_port = agent_port
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        # Like ssh(1): without a user, the local login name, for the host and the jump alike.
        local_user = getpass.getuser()
        self._endpoint = _Endpoint(
            target.address, target.port, target.user or local_user, target.key_file
        )
        jump = target.jump
        self._jump = (
            _Endpoint(jump.address, jump.port, jump.user or local_user, jump.key_file)
            if jump is not None
            else None
        )
        self.describe = f"ssh {self._endpoint}" + (f" via {self._jump}" if self._jump else "")
        self._lock = threading.Lock()
        self._session: _Session | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._last_error: TransportError | None = None
        self._closed = False

    # -- the Transport interface ------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float,
    ) -> Response:
        transport = self._connected(timeout)
        deadline = time.monotonic() + timeout
        channel = self._open_tunnel(transport, timeout)
        conn = _ChannelHTTPConnection(_ChannelSocket(channel, deadline), self.agent_port)
        sent = {"Connection": "close", **(headers or {})}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=payload, headers=sent)
            answer = conn.getresponse()
            return Response(answer.status, answer.read())
        except TimeoutError:
            raise TransportError(
                f"{self.host}: the agent did not answer {method} {path} within {timeout:g}s"
            ) from None
        except (http.client.HTTPException, *_SSH_ERRORS) as exc:
            if not transport.is_active():
                self._drop(transport)
                raise TransportError(
                    f"{self.host}: the SSH connection to {self._endpoint} was lost during "
                    f"{method} {path}; it is reopened on the next request"
                ) from None
            raise TransportError(
                f"{self.host}: the agent closed the connection without a complete answer to "
                f"{method} {path} ({type(exc).__name__}: {exc or 'no details'})"
            ) from None
        finally:
            channel.close()

    def read_token(self, timeout: float) -> str:
        transport = self._connected(timeout)
        path = str(self.target.token_file)
        where = f"{self.host}: reading the agent token {path} as {self._endpoint.user}"
        try:
            channel = transport.open_session(timeout=timeout)
        except paramiko.ChannelException as exc:
            raise TransportError(
                f"{where}: the SSH server refused a session ({exc.text})"
            ) from None
        except _SSH_ERRORS as exc:
            self._drop(transport)
            raise TransportError(f"{where}: the SSH connection failed ({exc})") from None
        # paramiko waits for the answer to `exec` without a timeout; closing the
        # channel at the deadline is what ends every wait below.
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            channel.close()

        watchdog = threading.Timer(timeout, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            channel.settimeout(timeout)
            channel.exec_command(f"cat -- {shlex.quote(path)}")
            out = _read_all(channel.recv)
            err = _read_all(channel.recv_stderr)
            channel.status_event.wait(timeout)
            status = channel.exit_status if channel.exit_status_ready() else None
        except (TimeoutError, *_SSH_ERRORS) as exc:
            if expired.is_set() or isinstance(exc, TimeoutError):
                raise TransportError(f"{where}: no answer within {timeout:g}s") from None
            if not transport.is_active():
                self._drop(transport)
            raise TransportError(f"{where}: {exc or type(exc).__name__}") from None
        finally:
            watchdog.cancel()
            channel.close()
        if expired.is_set() or status is None:
            raise TransportError(f"{where}: no answer within {timeout:g}s")
        if status != 0:
            message = err.decode(errors="replace").strip() or f"cat exited with {status}"
            hint = ""
            if "permission denied" in message.lower():
                hint = (
                    f". {self._endpoint.user} must be in the agent's `hadeck` group "
                    f"(`sudo usermod -aG hadeck {self._endpoint.user}` on the host, "
                    "then log in again)"
                )
            elif "no such file" in message.lower():
                hint = (
                    ". Check token_file in the inventory; the agent creates the file on "
                    "its first start"
                )
            raise TransportError(f"{where}: {message}{hint}")
        if len(out) > MAX_TOKEN_BYTES:
            raise TransportError(f"{where}: the file is too large to be a token")
        token = out.decode(errors="replace").strip()
        if not token:
            raise TransportError(f"{where}: the file is empty")
        return token

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._session is not None:
                self._session.close()
                self._session = None

    # -- the connection ---------------------------------------------------------

    def _connected(self, timeout: float) -> paramiko.Transport:
        """The live SSH connection, opening one if needed (or failing fast while backing off)."""
        # Another worker may be connecting; wait for it, but not beyond our own timeout.
        if not self._lock.acquire(timeout=max(timeout, 0.0)):
            raise TransportError(
                f"{self.host}: still connecting to {self._endpoint} after {timeout:g}s"
            )
        try:
            if self._closed:
                raise TransportError(f"{self.host}: the SSH transport is closed")
            if self._session is not None:
                transport = self._session.transport()
                if transport is not None:
                    return transport
                log.info("%s: SSH connection to %s lost", self.host, self._endpoint)
                self._session.close()
                self._session = None
            now = time.monotonic()
            if self._last_error is not None and now < self._retry_at:
                raise type(self._last_error)(
                    f"{self._last_error} (next attempt in {self._retry_at - now:.1f}s)"
                )
            try:
                self._session = self._connect()
            except TransportError as exc:
                self._failures += 1
                delay = min(BACKOFF_INITIAL * 2 ** min(self._failures - 1, 16), BACKOFF_MAX)
                self._retry_at = time.monotonic() + delay
                self._last_error = exc
                log.warning("%s: %s (retrying in %.1fs)", self.host, exc, delay)
                raise
            self._failures = 0
            self._last_error = None
            log.info("%s: connected, %s", self.host, self.describe)
            transport = self._session.transport()
            if transport is None:
                raise TransportError(f"{self.host}: the SSH connection closed right after login")
            return transport
        finally:
            self._lock.release()

    def _open_tunnel(self, transport: paramiko.Transport, timeout: float) -> paramiko.Channel:
        """A `direct-tcpip` channel to the agent's loopback port on the host."""
        target = ("127.0.0.1", self.agent_port)
        try:
            return transport.open_channel("direct-tcpip", target, ("127.0.0.1", 0), timeout=timeout)
        except paramiko.ChannelException as exc:
            # sshd answered, so the connection is fine: the refusal is about the agent.
            if exc.code == _CONNECT_FAILED:
                raise TransportError(
                    f"{self.host}: the agent is not answering on 127.0.0.1:{self.agent_port} "
                    f"({exc.text}); is hadeck-agent running and is agent_port right?"
                ) from None
            if exc.code == _ADMINISTRATIVELY_PROHIBITED:
                raise TransportError(
                    f"{self.host}: sshd on {self._endpoint.address} refuses port forwarding "
                    "to the agent; it needs `AllowTcpForwarding yes` (or `local`) for "
                    f"{self._endpoint.user}"
                ) from None
            raise TransportError(
                f"{self.host}: sshd refused a channel to 127.0.0.1:{self.agent_port}: {exc.text}"
            ) from None
        except _SSH_ERRORS as exc:
            # No answer from sshd to a channel open: the connection itself is dead or hung.
            self._drop(transport)
            raise TransportError(
                f"{self.host}: the SSH connection to {self._endpoint} stopped answering "
                f"({exc or type(exc).__name__}); it is reopened on the next request"
            ) from None

    def _drop(self, transport: paramiko.Transport) -> None:
        """Forget a connection that failed, unless another worker has already replaced it."""
        with self._lock:
            if self._session is not None and self._session.client.get_transport() is transport:
                self._session.close()
                self._session = None

    def _known_hosts(self) -> list[Path]:
        """The files host keys are checked against, the user's (or the inventory's) first."""
        files = [(self.target.known_hosts or USER_KNOWN_HOSTS).expanduser()]
        if SYSTEM_KNOWN_HOSTS.exists():
            files.append(SYSTEM_KNOWN_HOSTS)
        return files

    def _connect(self) -> _Session:
        files = self._known_hosts()
        if self._jump is None:
            return _Session(self._login(self._endpoint, files, None), None)
        jump = self._login(self._jump, files, None, role="the jump host ")
        try:
            jump_transport = jump.get_transport()
            assert jump_transport is not None
            t = self._endpoint
            sock = jump_transport.open_channel(
                "direct-tcpip",
                (t.address, t.port),
                ("127.0.0.1", 0),
                timeout=self.connect_timeout,
            )
            return _Session(self._login(self._endpoint, files, sock), jump)
        except paramiko.ChannelException as exc:
            jump.close()
            raise TransportError(
                f"{self.host}: the jump host {self._jump} could not reach "
                f"{self._endpoint.address}:{self._endpoint.port} ({exc.text})"
            ) from None
        except _SSH_ERRORS as exc:
            jump.close()
            raise TransportError(f"{self.host}: the jump host {self._jump} failed: {exc}") from None
        except BaseException:
            jump.close()
            raise

    def _login(
        self,
        e: _Endpoint,
        files: list[Path],
        sock: paramiko.Channel | None,
        role: str = "",
    ) -> paramiko.SSHClient:
        """Connect, check the host key and authenticate, or raise a TransportError saying why."""
        where = f"{self.host}: {role}{e}"
        if e.key_file is not None and not e.key_file.expanduser().is_file():
            raise TransportError(f"{where}: the key file {e.key_file} does not exist")
        client = paramiko.SSHClient()
        try:
            for f in files:
                if f.exists():
                    client.load_system_host_keys(str(f))
        except OSError as exc:
            raise TransportError(f"{where}: cannot read known_hosts: {exc}") from None
        client.set_missing_host_key_policy(_RefuseUnknownHostKey(where, e, files))
        t = self.connect_timeout
        try:
            client.connect(
                e.address,
                e.port,
                username=e.user,
                key_filename=str(e.key_file.expanduser()) if e.key_file else None,
                allow_agent=e.key_file is None,
                look_for_keys=e.key_file is None,
                timeout=t,
                banner_timeout=t,
                auth_timeout=t,
                channel_timeout=t,
                sock=sock,
            )
        except BaseException as exc:
            client.close()
            raise self._login_error(where, e, files, exc) from None
        transport = client.get_transport()
        if transport is not None and self.keepalive > 0:
            transport.set_keepalive(max(1, round(self.keepalive)))
        return client

    def _login_error(
        self, where: str, e: _Endpoint, files: list[Path], exc: BaseException
    ) -> BaseException:
        if isinstance(exc, HostKeyError):
            return exc
        if isinstance(exc, paramiko.BadHostKeyException):
            return _changed_key_error(where, e, files, exc)
        keys = f"the key {e.key_file}" if e.key_file else "the keys from ssh-agent and ~/.ssh/id_*"
        if isinstance(exc, paramiko.PasswordRequiredException):
            return TransportError(
                f"{where}: the key file {e.key_file} is encrypted; load it into ssh-agent "
                "(`ssh-add`) and leave key_file out of the inventory"
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return TransportError(
                f"{where}: SSH login as {e.user}@{e.address} was refused with {keys}. "
                f"Check that the public key is in ~{e.user}/.ssh/authorized_keys on the host"
            )
        if isinstance(exc, TimeoutError):
            return TransportError(f"{where}: no SSH answer within {self.connect_timeout:g}s")
        if isinstance(exc, paramiko.SSHException):
            return TransportError(f"{where}: the SSH handshake failed: {exc}")
        if isinstance(exc, NoValidConnectionsError):
            # Every address refused or was unreachable; say which, not paramiko's summary.
            reasons = sorted(
                {str(getattr(err, "strerror", None) or err).lower() for err in exc.errors.values()}
            )
            return TransportError(
                f"{where}: cannot connect ({', '.join(reasons)}); is sshd running there "
                "and is the port right?"
            )
        if isinstance(exc, OSError):
            return TransportError(f"{where}: cannot connect: {exc.strerror or exc}")
        if isinstance(exc, EOFError):
            return TransportError(f"{where}: the server closed the connection during login")
        return exc


def _read_all(recv: Callable[[int], bytes]) -> bytes:
    """Everything a channel stream gives until EOF, refusing more than a token can be."""
    data = bytearray()
    while chunk := recv(65536):
        data += chunk
        if len(data) > MAX_TOKEN_BYTES:
            break
    return bytes(data)
