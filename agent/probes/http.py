"""HTTP(S) probe: method, URL, accepted statuses, optional body regex; TLS verified by default.

One fresh connection per check, spoken with h11 over asyncio streams. A new
connection each time is what a health check should prove (the service still
accepts clients, as HAProxy's checks do), and the thin stack matters here: an
agent runs dozens of these every few seconds, and a general-purpose client
(pools, cookies, proxies, redirects) cost about three times the CPU per check.
Proxy environment variables are not honoured: a probe talks to its target.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlsplit

import h11

from agent.config import HttpProbe
from agent.probes import net
from agent.probes.base import Outcome, Probe, os_reason

BODY_LIMIT = 64 * 1024
READ_SIZE = 16 * 1024


@functools.cache
def _tls(verify: bool) -> ssl.SSLContext:
    """One TLS context per verify mode for all probes: each context loads the CA bundle
    (about a megabyte), and a host with dozens of HTTP probes must not pay that per probe."""
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    tls: bool
    request: h11.Request

    @classmethod
    def parse(cls, cfg: HttpProbe) -> Target:
        url = urlsplit(cfg.url)
        tls = url.scheme == "https"
        host = url.hostname or ""
        port = url.port or (443 if tls else 80)
        default_port = url.port is None or url.port == (443 if tls else 80)
        authority = f"[{host}]" if ":" in host else host
        if not default_port:
            authority += f":{port}"
        headers = {"host": authority, "user-agent": "hadeck-agent"}
        if url.username is not None:
            user_pass = f"{unquote(url.username)}:{unquote(url.password or '')}"
            headers["authorization"] = "Basic " + base64.b64encode(user_pass.encode()).decode()
        headers.update({k.lower(): v for k, v in cfg.headers.items()})
        headers["connection"] = "close"
        if cfg.method in ("POST", "PUT"):
            headers["content-length"] = "0"
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        request = h11.Request(method=cfg.method, target=target, headers=list(headers.items()))
        return cls(host, port, tls, request)


class HttpCheck(Probe):
    kind = "http"

    def __init__(self, cfg: HttpProbe) -> None:
        self.cfg = cfg
        self.body = re.compile(cfg.body_regex) if cfg.body_regex else None
        self.target = Target.parse(cfg)

    async def check(self) -> Outcome:
        t = self.target
        where = f"{t.host}:{t.port}"
        phase = f"connecting to {where}"
        stream: _Stream | None = None
        try:
            async with asyncio.timeout(self.cfg.timeout):
                stream = await (_TlsStream.open(t, self.cfg) if t.tls else _PlainStream.open(t))
                phase = f"waiting for the response from {where}"
                status, body = await self._exchange(stream)
        except TimeoutError:
            return Outcome(False, f"no answer within {self.cfg.timeout:g}s ({phase})")
        except ssl.SSLCertVerificationError as exc:
            reason = exc.verify_message
            return Outcome(False, f"TLS to {where}: certificate verify failed: {reason}")
        except ssl.SSLError as exc:
            return Outcome(False, f"TLS to {where}: {exc.reason or exc}")
        except OSError as exc:
            return Outcome(False, f"{phase}: {os_reason(exc)}")
        except h11.ProtocolError as exc:
            return Outcome(False, f"bad HTTP response from {where}: {exc}")
        finally:
            if stream is not None:
                stream.close()
        if status not in self.cfg.expect_status:
            return Outcome(False, f"HTTP {status}, expected {self.cfg.expect_status}")
        if self.body is not None:
            text = body[:BODY_LIMIT].decode("utf-8", "replace")
            if not self.body.search(text):
                return Outcome(False, f"HTTP {status}, body does not match {self.cfg.body_regex!r}")
        return Outcome(True, f"HTTP {status}")

    async def _exchange(self, stream: _Stream) -> tuple[int, bytes]:
        """Send the request; return the status and up to BODY_LIMIT bytes of the body."""
        conn = h11.Connection(h11.CLIENT)
        await stream.send(conn.send(self.target.request) + conn.send(h11.EndOfMessage()))
        status, body, received = 0, bytearray(), 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.recv()
                if not data and not received:
                    raise h11.RemoteProtocolError("connection closed before a response")
                received += len(data)
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                # Read on even without a regex, up to the limit: a connection closed with
                # unread data is reset, which a server logs as an error.
                body += event.data
                if len(body) >= BODY_LIMIT:
                    return status, bytes(body)
            elif isinstance(event, h11.EndOfMessage):
                return status, bytes(body)
            # InformationalResponse (1xx): the final response follows.


class _Stream(Protocol):
    async def send(self, data: bytes) -> None: ...

    async def recv(self) -> bytes: ...

    def close(self) -> None: ...


class _PlainStream:
    """Plain HTTP on a bare socket (agent/probes/net.py says why)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, t: Target) -> _PlainStream:
        return cls(await net.connect(t.host, t.port))

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

    async def recv(self) -> bytes:
        return await self.loop.sock_recv(self.sock, READ_SIZE)

    def close(self) -> None:
        self.sock.close()


class _TlsStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, t: Target, cfg: HttpProbe) -> _TlsStream:
        sock = await net.connect(t.host, t.port)  # the same address choice as plain HTTP
        try:
            reader, writer = await asyncio.open_connection(
                sock=sock, ssl=_tls(cfg.tls_verify), server_hostname=t.host
            )
        except BaseException:
            sock.close()
            raise
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self) -> bytes:
        return await self.reader.read(READ_SIZE)

    def close(self) -> None:
        """Dropped at once: a TLS close would wait for the peer's close_notify, and a
        server that never sends one would turn a healthy answer into a timeout."""
        self.writer.transport.abort()
