"""An unexpected exception in a route: a JSON 500 without the traceback, one log entry, an event."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import httpx
import pytest
from fastapi import APIRouter

from agent.api.app import build_api, build_public
from agent.events import EventLog
from agent.metrics import Metrics
from agent.store import Store

SECRET = "hunter2-in-an-exception-message"


def exploding() -> APIRouter:
    """A capability's router with a bug."""
    r = APIRouter()

    @r.get("/api/v1/boom")
    async def boom() -> dict[str, str]:
        raise RuntimeError(f"nobody expected this: {SECRET}")

    @r.get("/api/v1/fine")
    async def fine() -> dict[str, str]:
        return {"fine": "yes"}

    return r


@pytest.fixture
def agent(tmp_path):
    metrics = Metrics()
    store = Store(tmp_path / "state.db")
    yield SimpleNamespace(
        token="t" * 32, metrics=metrics, store=store, events=EventLog(store, metrics)
    )
    store.close()


async def get(app, path: str) -> httpx.Response:
    # raise_app_exceptions: an exception escaping the app would fail the test here, so
    # the server underneath (uvicorn) has nothing left to log a second time.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        return await client.get(path)


async def test_an_unexpected_exception_is_a_500_problem_logged_once_with_an_event(agent, caplog):
    app = build_api(agent, routers=[exploding()])
    with caplog.at_level(logging.INFO):
        r = await get(app, "/api/v1/boom")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error", "detail"} and "internal error" in body["error"]
    assert "Traceback" not in r.text and SECRET not in r.text and "RuntimeError" not in r.text

    tracebacks = [rec for rec in caplog.records if rec.exc_info]
    assert len(tracebacks) == 1, [rec.getMessage() for rec in caplog.records]
    assert tracebacks[0].name == "hadeck.api" and "/api/v1/boom" in tracebacks[0].getMessage()

    [event] = agent.store.events(limit=10)
    assert event.kind == "api_error" and event.severity == "warning"
    assert event.evidence["request"] == "GET '/api/v1/boom'"
    assert "RuntimeError" in event.evidence["error"]
    assert (
        body["detail"] is None
    )  # the event id is not known yet: events are written off the caller's path
    # The app goes on answering.
    assert (await get(app, "/api/v1/fine")).json() == {"fine": "yes"}


async def test_the_500_is_still_a_problem_when_the_event_cannot_be_written(agent, caplog):
    agent.store.close()  # every write now fails, as on a broken disk
    app = build_api(agent, routers=[exploding()])
    r = await get(app, "/api/v1/boom")
    assert r.status_code == 500 and r.json()["detail"] is None
    assert "could not record the api_error event" in caplog.text


async def test_routers_are_what_the_caller_passes(agent):
    api = build_api(agent, routers=[exploding()])
    assert (await get(api, "/api/v1/fine")).status_code == 200
    assert (await get(api, "/api/v1/status")).status_code == 404  # not passed, not there
    assert (await get(api, "/healthz")).json() == {"status": "ok"}  # always there
    public = build_public(agent, routers=[])
    assert (await get(public, "/groups/db/primary")).status_code == 404
    assert (await get(public, "/metrics")).status_code == 200
