"""What every request passes before any body is read: the token, then the body's size.

FastAPI reads and parses a body before it runs a route's dependencies, so the token
check in `operator` alone came after a 500 MB body had been read into memory. This
pure ASGI middleware (Starlette's BaseHTTPMiddleware would wrap every request in a
task group) answers from the headers: a mutating request without the token gets 401,
a declared length over the limit 413, before a byte of the body is read; a body
without a declared length (chunked) is counted as it streams and cut with 413 when it
passes the limit. An answer given before the body was read to its end closes the
connection, so the rest is never read either.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.api.auth import UNAUTHORIZED, token_matches
from agent.api.problems import problem

MiB = 1024 * 1024
#: The largest request body the agent reads. Its bodies are small JSON objects.
MAX_BODY = 1 * MiB
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CLOSE = (b"connection", b"close")


class BodyTooLarge(HTTPException):
    """Raised from `receive` while a route reads the body; FastAPI lets HTTP errors through
    its body parsing, and the app's handler makes it a `Problem`."""


class RequestGate:
    """`token`: where to read the agent's token; None where no route takes one (the public
    listener, which has no mutating routes: their 404 and 405 come without the body)."""

    def __init__(
        self, app: ASGIApp, token: Callable[[], str] | None, max_body: int = MAX_BODY
    ) -> None:
        self.app, self.token, self.max_body = app, token, max_body
        self.too_large = f"the request body is over the agent's limit of {max_body / MiB:g} MiB"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length") or "0"
        if not declared.isdigit():  # uvicorn refuses these itself; other servers may not
            await problem(400, "Content-Length must be a number")(scope, receive, send)
            return
        length = int(declared)
        has_body = length > 0 or "transfer-encoding" in headers
        closing = {"Connection": "close"} if has_body else None
        if (
            self.token is not None
            and scope["method"] in MUTATING
            and not token_matches(headers.get("authorization"), self.token())
        ):
            await problem(401, UNAUTHORIZED, headers=closing)(scope, receive, send)
            return
        if length > self.max_body:
            await problem(413, self.too_large, headers=closing)(scope, receive, send)
            return
        if not has_body:
            await self.app(scope, receive, send)
            return

        received, read_all, started = 0, False, False

        async def counted() -> Message:
            nonlocal received, read_all
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge(413, self.too_large)
                read_all = not message.get("more_body", False)
            return message

        async def answer(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                sent = message.get("headers", [])
                if not read_all and CLOSE not in sent:
                    message = {**message, "headers": [*sent, CLOSE]}
            await send(message)

        try:
            await self.app(scope, counted, answer)
        except BodyTooLarge:  # read outside a route (none does so today)
            if started:
                raise
            await problem(413, self.too_large)(scope, receive, answer)
