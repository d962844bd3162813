"""Pilot and snapshot tests run the real console against an in-memory fleet."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from console.app import HadeckApp
from tests.support.fake_fleet import NOW, FakeTransport, fleet

App = tuple[HadeckApp, dict[str, FakeTransport]]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test reads or writes the user's settings; times render in UTC."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    time.tzset()


@pytest.fixture
def make_app() -> Callable[..., App]:
    def make(n: int = 6, **kwargs: Any) -> App:
        model, clients, transports = fleet(n)
        kwargs.setdefault("theme", "hadeck-dark")
        kwargs.setdefault("actor", "alice@bastion")
        app = HadeckApp(
            model,
            clients,
            poll_interval=0.2,
            clock=lambda: NOW + 1,
            environment="staging",
            **kwargs,
        )
        return app, transports

    return make


async def until(pilot: Pilot[Any], condition: Callable[[], object], timeout: float = 10) -> None:
    """Let the app run until `condition()` holds; fail with the condition's name at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {condition.__doc__ or condition}"
            )
        await pilot.pause(0.05)


async def loaded(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, HadeckApp)

    def every_host_polled() -> bool:
        """every host polled once"""
        return all(h.status is not None for h in app.model.hosts.values())

    await until(pilot, every_host_polled)
    app.tick()
    await pilot.pause()


__all__ = ["App", "loaded", "os", "until"]
