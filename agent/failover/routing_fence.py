"""The routing fence: a new primary takes the old primary's server out of HAProxy first.

HAProxy routes to whichever server answers 200 on `/groups/<g>/primary`; a frozen old
primary answers nothing and so gets no new connection, but connections it already had
stay open until HAProxy sees a failed check, and a service that still thinks it is
primary would take their writes. So before its promote hook, a new primary sets the
old primary's server to `maint` in every configured HAProxy (which also cuts its
sessions with `on-marked-down shutdown-sessions` when set), and records that it did in
the group flag `fenced-<member>`. The fenced member, once it is a standby whose demote
hook has succeeded, puts itself back: `drain` (checks run again, still no traffic), until
HAProxy has counted it DOWN (it fails the primary check; a server leaving maint counts
as UP until `fall` checks have failed), then `ready`, and clears the flag. `backend` is
therefore the primary backend (checked on `/groups/<g>/primary`). A
server an operator put into maint by hand has no flag and is left alone.

HAProxy that does not answer does not stop a promotion: its own checks still follow
the primary endpoint; the failure is in the promotion's evidence.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agent.config.groups import RoutingFence
from agent.haproxy import HaproxyError, HaproxyRuntime

#: How long putting a server back waits for HAProxy's checks to settle after `drain`.
CHECK_WAIT = 30.0


def flag(member: str) -> str:
    return f"fenced-{member}"


async def take_out(fences: list[RoutingFence], server: str) -> list[dict[str, Any]]:
    """Every HAProxy at once, each bounded by its timeout; one result per HAProxy."""
    return list(await asyncio.gather(*(asyncio.to_thread(_maint, f, server) for f in fences)))


def _maint(fence: RoutingFence, server: str) -> dict[str, Any]:
    started = time.monotonic()
    result: dict[str, Any] = {"socket": str(fence.socket), "backend": fence.backend}
    try:
        HaproxyRuntime(fence.socket, fence.timeout).set_state(fence.backend, server, "maint")
    except HaproxyError as exc:
        result.update(ok=False, error=str(exc))
    else:
        result.update(ok=True)
    result["duration"] = round(time.monotonic() - started, 3)
    return result


async def put_back(
    fences: list[RoutingFence], server: str, primary: bool = False
) -> list[dict[str, Any]]:
    """`primary`: the fenced member has since become primary itself: straight to ready."""
    return list(
        await asyncio.gather(*(asyncio.to_thread(_ready, f, server, primary) for f in fences))
    )


def _ready(fence: RoutingFence, server: str, primary: bool) -> dict[str, Any]:
    """maint -> drain -> counted DOWN -> ready: never routed to on the strength of
    HAProxy's optimism about a server leaving maint."""
    runtime = HaproxyRuntime(fence.socket, fence.timeout)
    result: dict[str, Any] = {"socket": str(fence.socket), "backend": fence.backend}
    if primary:
        try:
            runtime.set_state(fence.backend, server, "ready")
        except HaproxyError as exc:
            return {**result, "ok": False, "error": str(exc)}
        return {**result, "ok": True}
    try:
        runtime.set_state(fence.backend, server, "drain")
        deadline = time.monotonic() + CHECK_WAIT
        while True:
            state = next((s for s in runtime.servers(fence.backend) if s.name == server), None)
            if state is None:
                raise HaproxyError(fence.socket, "show stat", f"no server {server!r}")
            if state.operational == "DOWN":  # the last check result may be from before maint
                break
            if time.monotonic() > deadline:
                raise HaproxyError(
                    fence.socket,
                    "show stat",
                    f"checks of {server} not settled within {CHECK_WAIT:g}s",
                )
            time.sleep(0.2)
        runtime.set_state(fence.backend, server, "ready")
    except HaproxyError as exc:
        result.update(ok=False, error=str(exc))
    else:
        result.update(ok=True)
    return result
