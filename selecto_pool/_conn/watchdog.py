"""A time bound on blocking calls to a connection (cleaning it on return).

A libpq call blocked on a stalled network can't be interrupted from its own
thread, and closing the connection from another thread is unsafe. Shutting
its socket down is safe: the blocked call fails at once, and the caller
closes the connection. One thread per pool does that for every guarded call
past its deadline; it starts with the first guard and ends after a minute
with nothing to watch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

from .statements import AnyConnection

logger = logging.getLogger("selecto_pool.pool")

# With nothing to watch for this long, the thread ends (the next guard starts
# a new one).
_IDLE_EXIT = 60.0


class Guard:
    """One guarded call: its deadline, and whether the watchdog cut it short."""

    __slots__ = ("_socket", "deadline", "fired")

    def __init__(self, deadline: float, sock: socket.socket):
        self.deadline = deadline
        self.fired = False
        # A duplicate of the connection's descriptor: shutting it down acts
        # on the socket even if the connection was closed (and its descriptor
        # number reused) meanwhile.
        self._socket = sock

    def cut(self) -> None:
        self.fired = True
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        self._socket.close()


class Watchdog:
    """Cuts the connection of a guarded call that overruns ``seconds``."""

    def __init__(self, pool_name: str, seconds: float):
        self.pool_name = pool_name
        self.seconds = seconds
        self._guards: set[Guard] = set()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def guard(self, conn: AnyConnection) -> Iterator[Guard]:
        """Bound what runs in the block: past the deadline, ``conn`` is cut."""
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        guard = Guard(time.monotonic() + self.seconds, sock)
        with self._wakeup:
            self._guards.add(guard)
            self._ensure_thread()
            self._wakeup.notify()
        try:
            yield guard
        finally:
            with self._wakeup:
                # Under the lock: the thread cuts only guards still in the set.
                self._guards.discard(guard)
            guard.release()

    def _ensure_thread(self) -> None:
        # Called with the lock held. A thread inherited across fork() is dead.
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run,
                name=f"selecto-pool-watchdog-{self.pool_name}",
                daemon=True,
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                if not self._watch_once():
                    return
            except Exception:  # never die silently: log, go on
                logger.exception("watchdog of pool %r failed", self.pool_name)
                time.sleep(1.0)

    def _watch_once(self) -> bool:
        """Cut the guards past their deadline; False when it's time to end."""
        with self._wakeup:
            if not self._guards:
                self._wakeup.wait(_IDLE_EXIT)
                if not self._guards:
                    self._thread = None
                    return False
            now = time.monotonic()
            earliest = min(guard.deadline for guard in self._guards)
            if earliest > now:
                # Bounded: any timeout would do (a guard added meanwhile
                # wakes the thread), and a huge one overflows wait().
                self._wakeup.wait(min(earliest - now, _IDLE_EXIT))
                return True
            for guard in [g for g in self._guards if g.deadline <= now]:
                self._guards.discard(guard)
                guard.cut()
        return True
