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
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import h11

from agent.config import HttpProbe
from agent.probes.base import Outcome, Probe, os_reason

BODY_LIMIT = 64 * 1024
READ_SIZE = 16 * 1024
# A TLS close waits for the peer's close_notify; a probe does not wait long for it.
TLS_CLOSE_TIMEOUT = 1.0


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
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.cfg.timeout):
                reader, writer = await asyncio.open_connection(
                    t.host,
                    t.port,
                    ssl=_tls(self.cfg.tls_verify) if t.tls else None,
                    server_hostname=t.host if t.tls else None,
                )
                phase = f"waiting for the response from {where}"
                status, body = await self._exchange(reader, writer)
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
            if writer is not None:
                await _close(writer)
        if status not in self.cfg.expect_status:
            return Outcome(False, f"HTTP {status}, expected {self.cfg.expect_status}")
        if self.body is not None:
            text = body[:BODY_LIMIT].decode("utf-8", "replace")
            if not self.body.search(text):
                return Outcome(False, f"HTTP {status}, body does not match {self.cfg.body_regex!r}")
        return Outcome(True, f"HTTP {status}")

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[int, bytes]:
        """Send the request; return the status and up to BODY_LIMIT bytes of the body."""
        conn = h11.Connection(h11.CLIENT)
        writer.write(conn.send(self.target.request) + conn.send(h11.EndOfMessage()))
        status, body = 0, bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(READ_SIZE)
                if not data and not status:
                    raise h11.RemoteProtocolError("connection closed before a response")
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


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(TLS_CLOSE_TIMEOUT):
            await writer.wait_closed()
    except (TimeoutError, OSError, ssl.SSLError):
        writer.transport.abort()
    except asyncio.CancelledError:
        writer.transport.abort()
        raise
