"""A listener's accept keeps to its connection cap; the refusal is an HTTP answer."""

from __future__ import annotations

import json
import socket

import h11
import pytest

from agent.api.server import SLACK, ConnectionCap, bind


def answer(client: socket.socket) -> tuple[int, bytes]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    status, body = 0, b""
    client.settimeout(5)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(client.recv(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return status, body


def test_connections_over_the_cap_with_none_idle_get_a_503_problem_and_are_closed():
    listener = bind("127.0.0.1:0")  # non-blocking, as asyncio uses it
    listener.cap = ConnectionCap(1)
    port = listener.getsockname()[1]
    admitted, clients = [], []
    try:
        # None of these becomes idle (no HTTP protocol runs here): all count as busy once
        # started, as asyncio starts each a turn after its accept.
        for _ in range(1 + SLACK):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            admitted.append(listener.accept()[0])
            listener.cap.started(admitted[-1].fileno())
        assert listener.cap.open == 1 + SLACK
        late = socket.create_connection(("127.0.0.1", port), timeout=5)
        clients.append(late)
        with pytest.raises(BlockingIOError):  # refused, then nothing more to accept
            listener.accept()
        status, body = answer(late)
        assert status == 503
        assert json.loads(body) == {
            "error": "too many connections to this listener",
            "detail": None,
        }
        assert late.recv(1) == b""  # closed
        # A place given back is a place for the next one.
        admitted.pop().close()
        assert listener.cap.open == SLACK
        clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        admitted.append(listener.accept()[0])
        listener.cap.started(admitted[-1].fileno())
        assert listener.cap.open == 1 + SLACK
        # One accepted but not started yet (its transport is a turn away): a newcomer at
        # the ceiling waits in the backlog for it instead of being refused.
        admitted.pop().close()
        clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        admitted.append(listener.accept()[0])
        waiting = socket.create_connection(("127.0.0.1", port), timeout=5)
        clients.append(waiting)
        with pytest.raises(BlockingIOError):
            listener.accept()
        waiting.settimeout(0.2)
        with pytest.raises(TimeoutError):
            waiting.recv(1)  # no 503: it was not accepted at all
    finally:
        for s in admitted + clients:
            s.close()
        listener.close()
