"""A local agent, reached over plain HTTP on loopback (the demo and single-host use)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from console.transport.base import Response, Transport, TransportError


class LocalTransport(Transport):
    def __init__(self, url: str, token_file: Path | None) -> None:
        self.url = url.rstrip("/")
        self.token_file = token_file
        self.describe = self.url
        self._client = httpx.Client(base_url=self.url)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float,
    ) -> Response:
        try:
            r = self._client.request(method, path, json=body, headers=headers, timeout=timeout)
        except httpx.TimeoutException:
            raise TransportError(f"{self.url}: no answer within {timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise TransportError(f"{self.url}: {exc or type(exc).__name__}") from None
        return Response(r.status_code, r.content)

    def read_token(self, timeout: float) -> str:
        if self.token_file is None:
            raise TransportError(f"{self.url}: no token_file in the inventory; actions need one")
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TransportError(
                f"cannot read the token file {self.token_file}: {exc.strerror}"
            ) from None
        if not token:
            raise TransportError(f"the token file {self.token_file} is empty")
        return token

    def close(self) -> None:
        self._client.close()
