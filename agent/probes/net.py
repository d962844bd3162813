"""TCP connections for probes on bare non-blocking sockets and the loop's sock_* calls.

asyncio's streams build a transport, a protocol and a reader per connection and
hand each step to the next loop iteration: about ten loop iterations per HTTP
check. A probe's exchange is one connect, one request, one answer, so bare
sockets do it in three or four, which on a host running dozens of probes is
most of the agent's CPU. TLS still goes through streams (agent/probes/http.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any


def numeric_family(host: str) -> socket.AddressFamily | None:
    """The address family of an IP literal; None for a name that needs resolving."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


async def connect(host: str, port: int) -> socket.socket:
    """A connected non-blocking socket; each resolved address is tried in turn.

    Names are resolved on every call (a probe must follow DNS changes), in the
    loop's resolver thread; IP literals skip the resolver.
    """
    loop = asyncio.get_running_loop()
    family = numeric_family(host)
    addresses: list[tuple[socket.AddressFamily, Any]]
    if family is not None:
        addresses = [(family, (host, port))]
    else:
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except UnicodeError as exc:  # a name the IDNA codec refuses (a label over 63 bytes)
            raise OSError(f"cannot resolve {host!r}: {exc}") from None
        addresses = [(info[0], info[4]) for info in infos]
    error: OSError | None = None
    for fam, address in addresses:
        try:
            sock = socket.socket(fam, socket.SOCK_STREAM)
        except OSError as exc:  # e.g. IPv6 disabled on this host: try the next address
            error = exc
            continue
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    assert error is not None  # getaddrinfo returns at least one address or raises
    raise error
