"""Clients waiting for a connection, served first come, first served.

A waiting client gets its connection handed to it directly by whoever frees
one (a checkin, a new connection), as psycopg_pool's ``WaitingClient`` does:
a connection returned while clients wait never goes back into the pool, so a
thread that asks later cannot take it from one that has waited longer. That
is what keeps service fair when threads outnumber connections.

Each waiter blocks on a lock of its own, released by the hand-off; handing
happens under the pool's lock, so a waiter whose timeout expires can tell,
under that lock, whether it was served meanwhile.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

C = TypeVar("C")


class Waiter(Generic[C]):
    """One client blocked in ``getconn()``."""

    __slots__ = ("_ready", "conn", "error")

    def __init__(self) -> None:
        self.conn: C | None = None
        self.error: BaseException | None = None
        self._ready = threading.Lock()
        self._ready.acquire()

    def wait(self, timeout: float) -> bool:
        """True once served (a connection or an error); False on timeout."""
        # Bounded: a lock can't wait longer than TIMEOUT_MAX (about 292 years).
        return self._ready.acquire(
            timeout=min(max(timeout, 0.0), threading.TIMEOUT_MAX)
        )

    def hand(self, conn: C) -> None:
        self.conn = conn
        self._ready.release()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._ready.release()


class WaitQueue(Generic[C]):
    """The waiters of one pool, oldest first. Used under the pool's lock."""

    def __init__(self) -> None:
        self._waiters: deque[Waiter[C]] = deque()

    def __len__(self) -> int:
        return len(self._waiters)

    def join(self) -> Waiter[C]:
        waiter: Waiter[C] = Waiter()
        self._waiters.append(waiter)
        return waiter

    def leave(self, waiter: Waiter[C]) -> bool:
        """Remove a waiter that gave up; False if it was served meanwhile."""
        try:
            self._waiters.remove(waiter)
        except ValueError:
            return False
        return True

    def serve(self, conn: C) -> bool:
        """Hand ``conn`` to the oldest waiter; False if nobody waits."""
        if not self._waiters:
            return False
        self._waiters.popleft().hand(conn)
        return True

    def fail_all(self, error: BaseException) -> None:
        while self._waiters:
            self._waiters.popleft().fail(error)
