"""The `api` section: the loopback API, the optional read-only listener, the token."""

from __future__ import annotations

import ipaddress

from pydantic import field_validator

from agent.config.base import Secret, Strict


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        # `::1:9441` could be the address ::1 port 9441 or ::1:9441 on a default port.
        raise ValueError(f"write an IPv6 address in brackets, [ADDRESS]:PORT, got {value!r}")
    return host.strip("[]"), int(port)


class ApiSection(Strict):
    listen: str = "127.0.0.1:9440"
    public_listen: str | None = None
    token: Secret | None = None

    @field_validator("listen")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        host, _ = _listen(value)
        if host == "localhost":
            return value
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            raise ValueError(f"expected an IP address, got {host!r}") from None
        if not loopback:
            raise ValueError(
                f"the full API must listen on loopback only, got {host!r}; "
                "use public_listen for the read-only endpoints"
            )
        return value

    @field_validator("public_listen")
    @classmethod
    def _valid_address(cls, value: str | None) -> str | None:
        if value is not None:
            _listen(value)
        return value
