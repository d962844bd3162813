"""Each probe kind against a real target on this machine: what passes, what fails, and why."""

from __future__ import annotations

import os
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent import probes
from agent.config import AgentConfig
from agent.probes.systemd import systemd_running
from tests.support.agent import DemoService, free_port

pytestmark = pytest.mark.integration


def probe(**cfg):
    spec = {"interval": "5s", "timeout": "2s", **cfg}
    return probes.build(AgentConfig.model_validate({"probes": {"p": spec}}).probes["p"])


async def outcome(**cfg):
    check = probe(**cfg)
    try:
        return await check.check()
    finally:
        await check.close()


async def test_http_status_and_body(demo_service):
    assert (await outcome(kind="http", url=demo_service.url, body_regex="^ok")).ok
    bad_body = await outcome(kind="http", url=demo_service.url, body_regex="healthy")
    assert not bad_body.ok and "body does not match" in bad_body.detail
    demo_service.fail_file.write_text("x")
    failing = await outcome(kind="http", url=demo_service.url)
    assert not failing.ok and failing.detail.startswith("HTTP 503")
    assert (await outcome(kind="http", url=demo_service.url, expect_status=[503])).ok


async def test_http_refused_connection(tmp_path):
    result = await outcome(kind="http", url=f"http://127.0.0.1:{free_port()}/")
    assert not result.ok and "ConnectError" in result.detail


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
    assert not closed.ok and "connect" in closed.detail


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
