"""HTTP(S) probe: method, URL, accepted statuses, optional body regex; TLS verified by default."""

from __future__ import annotations

import functools
import re
import ssl

import httpx

from agent.config import HttpProbe
from agent.probes.base import Outcome, Probe

BODY_LIMIT = 64 * 1024


@functools.cache
def _tls(verify: bool) -> ssl.SSLContext:
    """One TLS context per verify mode for all probes: each context loads the CA bundle
    (about a megabyte), and a host with dozens of HTTP probes must not pay that per probe."""
    if verify:
        return ssl.create_default_context()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class HttpCheck(Probe):
    kind = "http"

    def __init__(self, cfg: HttpProbe) -> None:
        self.cfg = cfg
        self.body = re.compile(cfg.body_regex) if cfg.body_regex else None
        # One client per probe: keep-alive to the target, but no connection pool shared
        # with other probes, so a slow target cannot starve another probe of connections.
        self.client = httpx.AsyncClient(
            verify=_tls(cfg.tls_verify),
            timeout=cfg.timeout,
            follow_redirects=False,
            headers={"User-Agent": "hadeck-agent", **cfg.headers},
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    async def check(self) -> Outcome:
        try:
            async with self.client.stream(self.cfg.method, self.cfg.url) as response:
                status = response.status_code
                body = b""
                if self.body is not None:
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) >= BODY_LIMIT:
                            break
        except httpx.HTTPError as exc:
            return Outcome(
                False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            )
        if status not in self.cfg.expect_status:
            return Outcome(False, f"HTTP {status}, expected {self.cfg.expect_status}")
        if self.body is not None:
            text = body[:BODY_LIMIT].decode("utf-8", "replace")
            if not self.body.search(text):
                return Outcome(False, f"HTTP {status}, body does not match {self.cfg.body_regex!r}")
        return Outcome(True, f"HTTP {status}")

    async def close(self) -> None:
        await self.client.aclose()
