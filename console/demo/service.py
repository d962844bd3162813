"""A tiny HTTP service for the demo and the tests: something real to probe, kill and restart.

`python -m console.demo.service --port 8081 --pidfile svc.pid --daemon` stops the
instance its pidfile names, if any, then forks
into the background (its own session, stdio on /dev/null), writes its pidfile
once it listens, and the starting process exits 0 only then, so a restart
command that runs it returns exactly when the service is up.
`GET /health` answers 200 `ok`, or 503 while the file named by `--fail-file` exists.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


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
    if args.pidfile:
        tmp = args.pidfile.with_suffix(".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        tmp.replace(args.pidfile)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if write_end >= 0:
        os.write(write_end, b"1")
        os.close(write_end)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        if args.pidfile:
            with contextlib.suppress(OSError):
                if args.pidfile.read_text().strip() == str(os.getpid()):
                    args.pidfile.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
