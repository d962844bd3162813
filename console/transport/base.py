"""The one interface every transport implements, so the fleet model never knows which it has.

Transports are blocking: the console calls them from thread workers (paramiko is
blocking), never from the UI thread. Every call takes a timeout, and every failure
is a `TransportError` whose message an operator can act on.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


class TransportError(Exception):
    """The agent could not be reached or did not answer in time; the message says why."""


class HostKeyError(TransportError):
    """The host's SSH key is unknown or changed: refused, never auto-accepted."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes

    def json_or_text(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return self.body.decode("utf-8", "replace")


class Transport(ABC):
    """One host's way to its agent's API."""

    #: What the connection badge shows, e.g. "ssh ops@10.0.0.5" or "http://127.0.0.1:9441".
    describe: str = ""

    @abstractmethod
    def request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float,
    ) -> Response:
        """One HTTP request to the agent's API; raises TransportError on any failure."""

    @abstractmethod
    def read_token(self, timeout: float) -> str:
        """The agent's API token, read where the agent keeps it (over SSH for a remote host)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; called once when the console exits."""
