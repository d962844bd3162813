"""Each probe kind against a real target on this machine: what passes, what fails, and why."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent import probes
from agent.config import AgentConfig
from agent.probes import net
from agent.probes.systemd import systemd_running
from tests.support.agent import DemoService, free_port

pytestmark = pytest.mark.integration


def probe(**cfg):
    spec = {"interval": "5s", "timeout": "2s", **cfg}
    return probes.build(AgentConfig.model_validate({"probes": {"p": spec}}).probes["p"])


async def outcome(**cfg):
    return await probe(**cfg).check()


async def test_http_status_and_body(demo_service):
    assert (await outcome(kind="http", url=demo_service.url, body_regex="^ok")).ok
    bad_body = await outcome(kind="http", url=demo_service.url, body_regex="healthy")
    assert not bad_body.ok and "body does not match" in bad_body.detail
    demo_service.fail_file.write_text("x")
    failing = await outcome(kind="http", url=demo_service.url)
    assert not failing.ok and failing.detail.startswith("HTTP 503")
    assert (await outcome(kind="http", url=demo_service.url, expect_status=[503])).ok


async def test_http_refused_connection(tmp_path):
    port = free_port()
    result = await outcome(kind="http", url=f"http://127.0.0.1:{port}/")
    assert not result.ok
    assert result.detail == f"connecting to 127.0.0.1:{port}: Connection refused"


@pytest.fixture
def recording_server():
    """An HTTP server that answers 200 and keeps what each request carried."""
    seen: list[dict[str, object]] = []

    class Recorder(BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            seen.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers.items()),
                    "body": self.rfile.read(length),
                }
            )
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(b"ok")

        do_GET = do_HEAD = do_POST = do_PUT = do_OPTIONS = _answer

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "OPTIONS"])
async def test_http_request_carries_method_headers_and_credentials(recording_server, method):
    authority, seen = recording_server
    result = await outcome(
        kind="http",
        url=f"http://probe:s%40cret@{authority}/healthz?deep=1",
        method=method,
        headers={"X-Check": "hadeck", "User-Agent": "lb-check"},
    )
    assert result.ok and result.detail == "HTTP 200", result.detail
    (request,) = seen
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert request["method"] == method and request["path"] == "/healthz?deep=1"
    assert headers["host"] == authority
    assert headers["x-check"] == "hadeck" and headers["user-agent"] == "lb-check"
    assert headers["authorization"] == "Basic cHJvYmU6c0BjcmV0"  # probe:s@cret
    # A body-less POST or PUT still says so, or strict servers answer 411.
    assert headers.get("content-length") == ("0" if method in ("POST", "PUT") else None)


async def test_http_timeout_says_which_phase(tmp_path):
    # A listening socket that never accepts: the connection completes in the kernel's
    # backlog, the request is sent, and no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        result = await outcome(kind="http", url=f"http://127.0.0.1:{port}/", timeout="0.5s")
        assert time.monotonic() - started < 2
    assert not result.ok
    waiting = f"waiting for the response from 127.0.0.1:{port}"
    assert result.detail == f"no answer within 0.5s ({waiting})"


async def test_http_connection_closed_without_an_answer(tmp_path):
    with socket.socket() as rude:
        rude.bind(("127.0.0.1", 0))
        rude.listen(8)
        port = rude.getsockname()[1]

        def accept_and_close():
            conn, _ = rude.accept()
            conn.recv(4096)
            conn.close()

        thread = threading.Thread(target=accept_and_close, daemon=True)
        thread.start()
        result = await outcome(kind="http", url=f"http://127.0.0.1:{port}/")
        thread.join(5)
    assert not result.ok and "closed before a response" in result.detail, result.detail


@pytest.fixture
def tls_server(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )

    class Ok(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


async def test_https_certificate_is_verified_by_default(tls_server):
    refused = await outcome(kind="http", url=tls_server)
    assert not refused.ok and "certificate" in refused.detail.lower()
    assert (await outcome(kind="http", url=tls_server, tls_verify=False)).ok


async def test_tcp(demo_service):
    assert (await outcome(kind="tcp", host="127.0.0.1", port=demo_service.port)).ok
    closed = await outcome(kind="tcp", host="127.0.0.1", port=free_port())
    assert not closed.ok and closed.detail.endswith(": Connection refused"), closed.detail


async def test_names_are_resolved_and_each_address_tried(demo_service):
    # `localhost` may resolve to ::1 first; the service listens on 127.0.0.1 only.
    assert (await outcome(kind="tcp", host="localhost", port=demo_service.port)).ok
    http = await outcome(kind="http", url=f"http://localhost:{demo_service.port}/")
    assert http.ok, http.detail
    unknown = await outcome(kind="tcp", host="no-such-host.invalid", port=80)
    assert not unknown.ok and unknown.detail.startswith("connect no-such-host.invalid:80: ")


async def test_command_exit_code_and_output():
    assert (
        await outcome(kind="command", command=["echo", "replication ok"], stdout_regex="ok$")
    ).ok
    wrong = await outcome(kind="command", command=["echo", "lagging"], stdout_regex="ok$")
    assert not wrong.ok and "does not match" in wrong.detail
    failed = await outcome(kind="command", command=["sh", "-c", "echo broken >&2; exit 2"])
    assert not failed.ok and failed.detail == "exit 2, expected 0: broken"
    assert (await outcome(kind="command", command=["false"], expect_exit=1)).ok


async def test_command_that_hangs_times_out():
    started = time.monotonic()
    result = await outcome(kind="command", command=["sleep", "30"], timeout="300ms", interval="1s")
    assert not result.ok and "timed out" in result.detail
    assert time.monotonic() - started < 5


async def test_process_by_pidfile_and_by_name(demo_service, tmp_path):
    assert (await outcome(kind="process", pidfile=str(demo_service.pidfile))).ok
    demo_service.kill()
    gone = await outcome(kind="process", pidfile=str(demo_service.pidfile))
    assert not gone.ok
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        assert (await outcome(kind="process", name="sleep")).ok
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not (await outcome(kind="process", name="no-such-process-xyz")).ok


async def test_disk_thresholds():
    assert (await outcome(kind="disk", path="/", min_free="1KiB")).ok
    full = await outcome(kind="disk", path="/", min_free="1000TiB")
    assert not full.ok and "below" in full.detail
    assert not (await outcome(kind="disk", path="/", min_free_percent=99.999)).ok
    assert not (await outcome(kind="disk", path="/no/such/dir", min_free="1KiB")).ok


async def test_file_age(tmp_path):
    heartbeat = tmp_path / "beat"
    heartbeat.write_text("")
    assert (await outcome(kind="file_age", path=str(heartbeat), max_age="1m")).ok
    old = time.time() - 600
    os.utime(heartbeat, (old, old))
    stale = await outcome(kind="file_age", path=str(heartbeat), max_age="1m")
    assert not stale.ok and "600s old" in stale.detail
    assert not (await outcome(kind="file_age", path=str(tmp_path / "none"), max_age="1m")).ok


async def test_systemd_reports_unavailable_without_systemd():
    result = await outcome(kind="systemd", unit="ssh.service")
    if systemd_running():
        assert result.available
    else:
        assert not result.available and "systemd is not running" in result.detail


def test_demo_service_argv_is_reusable(tmp_path):
    """The helper the agent tests rely on: starting twice replaces the running instance."""
    svc = DemoService(tmp_path)
    svc.start()
    first = svc.pid()
    svc.start()
    try:
        assert svc.pid() != first and svc.alive()
    finally:
        svc.stop()


async def test_a_name_whose_first_address_drops_packets_connects_to_the_next(monkeypatch):
    # A listener whose accept queue is full drops new SYNs: a connect to it hangs, as to
    # an address behind a broken route. The name resolves to it first, then to a good one.
    loop = asyncio.get_running_loop()
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    queued = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(full.getsockname())
        queued.append(c)
    good = socket.socket()
    good.bind(("127.0.0.1", 0))
    good.listen(8)
    try:
        hanging = socket.socket()
        hanging.setblocking(False)
        with pytest.raises(TimeoutError):  # the premise: this address really hangs
            await asyncio.wait_for(loop.sock_connect(hanging, full.getsockname()), 0.5)
        hanging.close()

        async def resolve(host, port, **_):
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", full.getsockname()),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", good.getsockname()),
            ]

        monkeypatch.setattr(loop, "getaddrinfo", resolve)
        started = time.monotonic()
        sock = await asyncio.wait_for(net.connect("dual.test", 80), 3)
        took = time.monotonic() - started
        assert sock.getpeername() == good.getsockname()
        sock.close()
        assert net.ATTEMPT_DELAY <= took < 2, took  # waited its turn, not the whole timeout

        result = await outcome(kind="tcp", host="dual.test", port=80, timeout="2s")
        assert result.ok, result.detail
    finally:
        for s in (*queued, full, good):
            s.close()
