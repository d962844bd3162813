"""A tiny HTTP service for the demo and the tests: something real to probe, kill and restart.

`python -m console.demo.service --port 8081 --pidfile svc.pid --daemon` stops the
instance its pidfile names, if any, then forks
into the background (its own session, stdio on /dev/null), writes its pidfile
once it listens, and the starting process exits 0 only then, so a restart
command that runs it returns exactly when the service is up.
`GET /health` answers 200 `ok`, or 503 while the file named by `--fail-file` exists.

`DemoService` is how the demo, the tests and the benchmarks start and stop one from outside.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from console.demo.component import ComponentError, free_port, wait_for


@dataclass
class DemoService:
    """One demo service, started daemonized exactly as its restart command starts it.

    It is not a child of whoever starts it (it forks into its own session, as a real
    service would under its init system), so it is found by its pidfile, which names the
    latest instance: restarts replace the first one.
    """

    dir: Path
    port: int = field(default_factory=free_port)
    #: Its files are `<stem>.pid` and `<stem>.fail` in `dir`; by default `svc-<port>`.
    stem: str = ""

    def __post_init__(self) -> None:
        self.stem = self.stem or f"svc-{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.dir / f"{self.stem}.pid"

    @property
    def fail_file(self) -> Path:
        """While this file exists, /health answers 503."""
        return self.dir / f"{self.stem}.fail"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    def start_argv(self) -> list[str]:
        """The command that (re)starts it, returning once it listens: also the agent's
        restart command for it."""
        return [
            sys.executable,
            "-m",
            "console.demo.service",
            "--port",
            str(self.port),
            "--pidfile",
            str(self.pidfile),
            "--fail-file",
            str(self.fail_file),
            "--daemon",
        ]

    def start(self) -> None:
        done = subprocess.run(
            self.start_argv(), capture_output=True, text=True, timeout=20, check=False
        )
        if done.returncode != 0:
            raise ComponentError(
                f"demo service on port {self.port} did not start (exit {done.returncode}): "
                f"{done.stderr.strip()}"
            )

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def alive(self) -> bool:
        pid = self.pid()
        return pid is not None and _exists(pid)

    def kill(self) -> int:
        """A crash: SIGKILL, and wait until it is gone; returns the pid it had."""
        pid = self.pid()
        if pid is None or not _exists(pid):
            raise ComponentError(f"demo service on port {self.port} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _exists(pid), 5, f"demo service pid {pid} to die")
        return pid

    def stop(self) -> None:
        """SIGTERM (it removes its pidfile), SIGKILL if it is still there after 5 s."""
        pid = self.pid()
        if pid is None or not _exists(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        try:
            wait_for(lambda: not _exists(pid), 5, f"demo service pid {pid} to stop")
        except ComponentError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not _exists(pid), 5, f"demo service pid {pid} to die")


def _exists(pid: int) -> bool:
    """The process is there and not a zombie (a dead child of ours not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _handler(fail_file: Path | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            failing = fail_file is not None and fail_file.exists()
            body = b"failing\n" if failing else b"ok\n"
            self.send_response(503 if failing else 200)
            self.send_header("Content-Type", "text/plain")
            # Which instance answered, for tests and demos behind a load balancer.
            self.send_header("X-Demo-Port", str(self.server.server_address[1]))  # type: ignore[index]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def _stop_previous(pidfile: Path) -> None:
    """A start is a restart: end the instance the pidfile names, waiting up to 5 s."""
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--pidfile", type=Path)
    p.add_argument("--fail-file", type=Path)
    p.add_argument("--daemon", action="store_true")
    args = p.parse_args(argv)
    if args.pidfile:
        _stop_previous(args.pidfile)
    # Bind before forking: an address in use fails the start command, visibly.
    try:
        server = ThreadingHTTPServer((args.host, args.port), _handler(args.fail_file))
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    if args.daemon:
        read_end, write_end = os.pipe()
        if os.fork() > 0:
            os.close(write_end)
            ready = os.read(read_end, 1)  # the grandchild says when it is serving
            return 0 if ready == b"1" else 1
        os.close(read_end)
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
    else:
        write_end = -1
    # A function of its own: a tracer (coverage.py's, restarted after the fork) sees only
    # frames that start after the fork.
    _serve(server, args.pidfile, write_end)
    return 0


def _serve(server: ThreadingHTTPServer, pidfile: Path | None, ready_fd: int) -> None:
    """Write the pidfile, tell the starting process (`ready_fd`, if any), serve until
    SIGTERM, and remove the pidfile if it still names this instance."""
    if pidfile:
        tmp = pidfile.with_suffix(".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        tmp.replace(pidfile)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if ready_fd >= 0:
        os.write(ready_fd, b"1")
        os.close(ready_fd)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        if pidfile:
            with contextlib.suppress(OSError):
                if pidfile.read_text().strip() == str(os.getpid()):
                    pidfile.unlink()


if __name__ == "__main__":
    sys.exit(main())
