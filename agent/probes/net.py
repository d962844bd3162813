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
from collections.abc import Sequence
from typing import Any


def numeric_family(host: str) -> socket.AddressFamily | None:
    """The address family of an IP literal; None for a name that needs resolving."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


# RFC 8305's "Connection Attempt Delay": how long an address gets before the next is tried.
ATTEMPT_DELAY = 0.25


async def connect(host: str, port: int) -> socket.socket:
    """A connected non-blocking socket to the first of the resolved addresses to answer.

    Names are resolved on every call (a probe must follow DNS changes), in the
    loop's resolver thread; IP literals skip the resolver.
    """
    loop = asyncio.get_running_loop()
    family = numeric_family(host)
    if family is not None:
        return await _attempt(family, (host, port))
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as exc:  # a name the IDNA codec refuses (a label over 63 bytes)
        raise OSError(f"cannot resolve {host!r}: {exc}") from None
    addresses = [(info[0], info[4]) for info in infos]
    if len(addresses) == 1:
        return await _attempt(*addresses[0])
    return await _race(addresses)


async def _attempt(family: socket.AddressFamily, address: Any) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)  # fails e.g. where IPv6 is disabled
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


def _connected(task: asyncio.Task[socket.socket]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


async def _race(addresses: Sequence[tuple[socket.AddressFamily, Any]]) -> socket.socket:
    """Happy Eyeballs, simply (RFC 8305): the next address is tried as soon as the
    previous one has failed or has not connected within ATTEMPT_DELAY; the first to
    connect wins. Tried one after another, an address whose packets are dropped (a
    broken IPv6 route) would use up the whole probe timeout and fail a healthy
    service."""
    todo = list(addresses)
    attempts: list[asyncio.Task[socket.socket]] = []
    try:
        while not any(_connected(t) for t in attempts):
            if todo:
                attempts.append(asyncio.create_task(_attempt(*todo.pop(0))))
            running = [t for t in attempts if not t.done()]
            if not running:
                break  # every address tried, none connected
            await asyncio.wait(
                running,
                timeout=ATTEMPT_DELAY if todo else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
    except BaseException:  # the caller's deadline: no socket may outlive it
        for t in attempts:
            if _connected(t):
                t.result().close()
        raise
    finally:
        for t in attempts:
            if not t.done():
                t.cancel()  # the attempt closes its socket
    connected = [t.result() for t in attempts if _connected(t)]
    if connected:
        for extra in connected[1:]:  # two connected in the same moment: keep one
            extra.close()
        return connected[0]
    errors = [e for t in attempts if (e := t.exception())]  # none connected, all done
    for error in errors:
        if not isinstance(error, OSError):
            raise error  # a bug, not the network: say so
    raise errors[-1]  # the last address's, as when they were tried one after another
