"""Hostile requests against a real agent: bodies it must not read, redirects it must not build."""

from __future__ import annotations

import json
import select
import socket
import time
from typing import Any

import httpx
import psutil
import pytest

from tests.support.agent import AgentProcess, http_probe, restartable
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
HUGE = 500 * 1000 * 1000  # the 500 MB body that took the agent to 1.08 GB


@pytest.fixture
def agent(start_agent, demo_service) -> AgentProcess:
    a: AgentProcess = start_agent(
        {
            "probes": {"web": http_probe(demo_service, interval="1s", timeout="500ms")},
            "services": {"web": restartable(demo_service, ["web"])},
            "runbooks": {"hello": {"steps": [{"command": ["echo", "hello"], "timeout": "5s"}]}},
        }
    )
    wait_for(lambda: a.service("web")["state"] == "up", 10, "web up")
    return a


def rss(agent: AgentProcess) -> int:
    assert agent.proc is not None
    return int(psutil.Process(agent.proc.pid).memory_info().rss)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(
    sock: socket.socket, timeout: float = 10, reset_after_head: bool = False
) -> tuple[int, dict[str, str], bytes | None]:
    """One HTTP/1.1 response with a Content-Length, read from a raw socket.

    `reset_after_head`: the client was still sending when the agent answered and closed, so
    the kernel may answer the bytes it never read with a reset that destroys the rest of
    the answer in flight (any HTTP server that stops reading does this); the body is then
    None, and the status line and headers are what the client got."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response; got {data!r}"
        data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    length = int(headers.get("content-length", "0"))
    status = int(status_line.split()[1])
    while len(body) < length:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            if not reset_after_head:
                raise
            return status, headers, None
        assert chunk, "connection closed in the middle of the response body"
        body += chunk
    return status, headers, body[:length]


def problem(body: bytes) -> dict[str, Any]:
    doc = json.loads(body)
    assert set(doc) >= {"error", "detail"}, doc
    return doc


def test_a_big_body_without_the_token_is_401_before_it_is_read(agent):
    before = rss(agent)
    with connect(agent.port) as sock:
        sock.sendall(
            head(
                "POST",
                "/api/v1/runbooks/hello/run",
                {"Content-Type": "application/json", "Content-Length": str(HUGE)},
            )
        )
        # Not one byte of the body is sent: the answer must come from the headers alone.
        status, headers, body = read_response(sock)
    assert status == 401
    assert "bearer token" in problem(body)["error"]
    assert headers.get("connection") == "close"
    assert rss(agent) - before < 10 * MiB
    assert not [r for r in agent.get("/api/v1/audit") if r["action"] == "runbook"]


def test_a_wrong_token_on_any_mutating_method_is_401(agent):
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        r = httpx.request(
            method,
            agent.url + "/api/v1/runbooks/hello/run",
            headers={"Authorization": "Bearer wrong-token-wrong-token"},
            content=b'{"reason": "x"}',
            timeout=10,
        )
        assert r.status_code == 401, (method, r.status_code, r.text)
        assert "bearer token" in r.json()["error"]


def test_a_declared_length_over_the_limit_is_413_at_once(agent):
    before = rss(agent)
    with connect(agent.port) as sock:
        sock.sendall(
            head(
                "POST",
                "/api/v1/runbooks/hello/run",
                {
                    "Authorization": f"Bearer {agent.token}",
                    "Content-Type": "application/json",
                    "Content-Length": str(HUGE),
                },
            )
        )
        status, headers, body = read_response(sock)
    assert status == 413
    assert "1 MiB" in problem(body)["error"]
    assert headers.get("connection") == "close"
    assert rss(agent) - before < 10 * MiB


def test_a_chunked_body_is_cut_with_413_when_it_passes_the_limit(agent):
    """No length is declared: the agent counts as the body streams and stops reading at 1 MiB."""
    before = rss(agent)
    chunk = b"x" * 65536
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    sent = 0
    with connect(agent.port) as sock:
        sock.sendall(
            head(
                "POST",
                "/api/v1/runbooks/hello/run",
                {
                    "Authorization": f"Bearer {agent.token}",
                    "Content-Type": "application/json",
                    "Transfer-Encoding": "chunked",
                },
            )
        )
        sock.setblocking(False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sent < 64 * MiB:
            readable, writable, _ = select.select([sock], [sock], [], 1)
            if readable:
                break
            if writable:
                try:
                    sent += sock.send(framed)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:  # the agent closed; its answer is in our receive buffer
                    break
        sock.setblocking(True)
        status, headers, body = read_response(sock, reset_after_head=True)
    assert status == 413, (status, body)
    assert body is None or "1 MiB" in problem(body)["error"]
    assert headers.get("connection") == "close"
    assert sent < 16 * MiB, f"the agent read {sent} bytes before answering"
    assert rss(agent) - before < 10 * MiB


def test_a_body_under_the_limit_is_still_read_and_validated(agent):
    body = json.dumps({"reason": "x" * (MiB - 100)})
    r = httpx.post(
        agent.url + "/api/v1/runbooks/hello/run",
        content=body,
        headers={"Authorization": f"Bearer {agent.token}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 422  # read in full: the reason is too long, not the body
    assert "reason" in r.json()["error"]
    assert agent.post("/api/v1/runbooks/hello/run", json={"reason": "ok"}).status_code == 200


@pytest.mark.parametrize("public", [True, False])
@pytest.mark.parametrize("path", ["/metrics/", "/healthz/", "/api/v1/status/"])
def test_a_trailing_slash_is_404_never_a_redirect_to_the_host_header(agent, public, path):
    base = agent.public_url if public else agent.url
    r = httpx.get(base + path, headers={"Host": "evil.example"}, timeout=10, follow_redirects=False)
    assert r.status_code == 404, (r.status_code, r.headers)
    assert "location" not in r.headers
    assert "evil.example" not in r.text
    assert r.json()["error"] == "Not Found"
