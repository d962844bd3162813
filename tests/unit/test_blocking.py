"""Calls that may hang in the kernel: one in flight per caller, and never queued behind
a stuck one."""

from __future__ import annotations

import asyncio
import threading

import pytest

from agent.blocking import Blocking, StillBlocked


async def test_a_stuck_call_refuses_the_next_and_starves_no_other_caller():
    release = threading.Event()
    stuck, other = Blocking(), Blocking()
    first = asyncio.ensure_future(stuck.call(release.wait))
    await asyncio.sleep(0.05)
    with pytest.raises(StillBlocked, match="has not returned after"):
        await stuck.call(lambda: "again")
    # Other callers get a thread of their own while the stuck one holds its own.
    results = await asyncio.wait_for(
        asyncio.gather(*(Blocking().call(lambda i=i: i) for i in range(20))), 5
    )
    assert results == list(range(20))
    assert await asyncio.wait_for(other.call(lambda: "ok"), 5) == "ok"

    release.set()
    assert await asyncio.wait_for(first, 5) is True
    assert await asyncio.wait_for(stuck.call(lambda: "after"), 5) == "after"


async def test_errors_reach_the_caller():
    def fail() -> None:
        raise FileNotFoundError(2, "No such file or directory")

    with pytest.raises(FileNotFoundError):
        await asyncio.wait_for(Blocking().call(fail), 5)
