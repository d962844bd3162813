"""A TCP proxy on loopback that can black-hole its traffic: one member's network partition.

Each member of a group can reach the lease store through its own proxy; `cut()` makes
that member's requests go unanswered (bytes are read and dropped, new connections are
accepted and never served), as a partition does, while the other members still reach the
store. `heal()` closes what was cut, so clients reconnect to a working path.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

from console.demo.component import free_port


@dataclass
class BlackHoleProxy:
    upstream_port: int
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> BlackHoleProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self._listener.close()
        self._close_all()

    def cut(self) -> None:
        self._cut.set()

    def heal(self) -> None:
        self._close_all()  # their streams lost bytes: the clients must start afresh
        self._cut.clear()

    def _close_all(self) -> None:
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.close()
            self._open.clear()

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._open.add(s)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._track(client)
            if self._cut.is_set():
                threading.Thread(target=self._drain, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), 2)
            except OSError:
                with contextlib.suppress(OSError):
                    client.close()
                continue
            upstream.settimeout(None)  # the 2 s was for connecting: idle keep-alives live on
            self._track(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _drain(self, s: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while s.recv(65536):
                pass

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if not self._cut.is_set():
                    dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
