"""Every error the API answers is a JSON `Problem`; an unexpected one is a 500 without a trace.

Expected errors (`ApiError`, invalid input, unknown paths and methods) keep their 4xx
status. Anything else is a bug: the caller gets a 500 `Problem` naming the event to
look up, never the traceback; the log gets the traceback once, and an `api_error`
event goes where every event goes, so the console shows it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.api.errors import ApiError
from agent.events import EventLog
from agent.schema import Problem

log = logging.getLogger("hadeck.api")

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem},
    401: {"model": Problem},
    404: {"model": Problem},
    409: {"model": Problem},
    422: {"model": Problem},
}


def problem(
    status: int, message: str, detail: Any = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        Problem(error=message, detail=detail).model_dump(), status_code=status, headers=headers
    )


def install_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{p['where']}: {p['problem']}" for p in problems[:5])
        return problem(422, f"invalid request: {summary}", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        # Keep the framework's headers (Allow on 405, WWW-Authenticate).
        return problem(exc.status_code, str(exc.detail), headers=exc.headers)


class CatchAll:
    """Pure ASGI, outside every other handler: the last word on an exception nobody handled.

    Starlette's own last resort answers in plain text and raises again, so uvicorn logs
    the traceback a second time; this one answers, logs once and ends there."""

    def __init__(self, app: ASGIApp, events: Callable[[], EventLog]) -> None:
        self.app, self.events = app, events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            where = f"{scope['method']} {scope['path']!r}"
            log.exception("unexpected error answering %s", where)
            self._emit(where, exc)
            if not started:
                message = "internal error in the agent; its log and its api_error event say more"
                await problem(500, message)(scope, receive, send)

    def _emit(self, where: str, exc: Exception) -> None:
        """The `api_error` event (EventLog.emit never raises: a failed write is kept and
        retried there, so the answer does not depend on it)."""
        try:
            self.events().emit(
                "api_error",
                "warning",
                f"the API failed answering {where}: {type(exc).__name__}",
                evidence={"request": where, "error": f"{type(exc).__name__}: {exc}"[:500]},
            )
        except Exception:  # the event path is what failed: the log line above remains
            log.exception("could not record the api_error event")
