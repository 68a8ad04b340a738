"""A TCP proxy between a pool and PostgreSQL, to inject network faults.

Loopback only, threads and blocking sockets: one thread accepts, two per
connection forward bytes. Faults:

* ``cut("refuse")``: the connections through the proxy are closed and new
  ones are refused (nothing listens: the client gets ECONNREFUSED at once);
* ``cut("blackhole")``: the connections are closed and new ones are accepted
  but never answered, like packets lost in a partition (the client waits for
  its ``connect_timeout``); ``restore()`` forwards them, as a healed network
  would;
* ``latency``: seconds added to every chunk forwarded, in each direction;
* ``drop()``: close every connection now, mid-query if one is running.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from typing import Literal

LOOPBACK = "127.0.0.1"
CutMode = Literal["refuse", "blackhole"]


class Proxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream`` until told otherwise."""

    def __init__(self, upstream_port: int, upstream_host: str = LOOPBACK):
        self.upstream = (upstream_host, upstream_port)
        #: Seconds each forwarded chunk is held back.
        self.latency = 0.0
        self._lock = threading.Lock()
        self._pipes: set[_Pipe] = set()
        self._held: list[socket.socket] = []
        self._mode: CutMode | None = None
        self._stopping = threading.Event()
        self._listener: socket.socket | None = self._listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="test-proxy-accept", daemon=True
        )

    # -- control ---------------------------------------------------------------
    def start(self) -> Proxy:
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            listener, self._listener = self._listener, None
            held, self._held = self._held, []
        if listener is not None:
            listener.close()
        for sock in held:
            _close(sock)
        self.drop()
        self._acceptor.join(timeout=5)

    def cut(self, mode: CutMode = "refuse") -> None:
        """Close the connections through the proxy; refuse or ignore new ones."""
        with self._lock:
            self._mode = mode
            listener = self._listener if mode == "refuse" else None
            if listener is not None:
                self._listener = None
        if listener is not None:
            listener.close()
        self.drop()

    def restore(self) -> None:
        """Forward again: connections left waiting by a blackhole go through."""
        with self._lock:
            self._mode = None
            held, self._held = self._held, []
            if self._listener is None and not self._stopping.is_set():
                self._listener = self._listen(self.port)
        for client in held:
            self._forward(client)

    def drop(self) -> None:
        """Close every connection through the proxy now."""
        with self._lock:
            pipes = list(self._pipes)
        for pipe in pipes:
            pipe.close()

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._pipes)

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------
    @staticmethod
    def _listen(port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, port))
        listener.listen(128)
        return listener

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                listener = self._listener
            if listener is None:
                time.sleep(0.01)
                continue
            try:
                readable, _, _ = select.select([listener], [], [], 0.05)
                if not readable:
                    continue
                client, _ = listener.accept()
            except (OSError, ValueError):
                continue  # closed by cut() or stop() meanwhile
            with self._lock:
                blackholed = self._mode == "blackhole"
                if blackholed:
                    self._held.append(client)
            if not blackholed:
                self._forward(client)

    def _forward(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _close(client)
            return
        server.settimeout(None)
        pipe = _Pipe(self, client, server)
        with self._lock:
            self._pipes.add(pipe)
        pipe.start()

    def _forget(self, pipe: _Pipe) -> None:
        with self._lock:
            self._pipes.discard(pipe)


class _Pipe:
    """One proxied connection: a thread per direction."""

    def __init__(self, proxy: Proxy, client: socket.socket, server: socket.socket):
        self.proxy = proxy
        self.sockets = (client, server)
        self._closed = threading.Event()
        for sock in self.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def start(self) -> None:
        client, server = self.sockets
        for source, target in ((client, server), (server, client)):
            threading.Thread(
                target=self._pump, args=(source, target), daemon=True
            ).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if latency := self.proxy.latency:
                    time.sleep(latency)
                target.sendall(data)
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for sock in self.sockets:
            _close(sock)
        self.proxy._forget(self)


def _close(sock: socket.socket) -> None:
    # shutdown() wakes a thread blocked in recv() on the socket; close() alone
    # does not.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
