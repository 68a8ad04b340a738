"""How a ``GenericPool`` keeps its connections: its supply side.

Connections are opened in the background (``opener``), for ``pool_size``
always and beyond it for waiting clients; a failed attempt is parked with the
maintenance thread's reconnect probe; the dead, the expired and, every
``max_idle``, one surplus connection are closed and, as needed, replaced.
``GenericPool`` (checkout, checkin, lifecycle) inherits these methods; they
work on its state, under its lock.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from typing import Any, Generic, TypeVar

from .._config.options import PoolOptions
from .._conn.outages import OutageLog
from . import usage
from .driver import Driver
from .maintenance import Maintainer
from .opener import Opener
from .usage import Usage
from .waiters import WaitQueue

logger = logging.getLogger("selecto_pool.pool")

C = TypeVar("C")


class _Opening:
    """One connection to open; parked with the maintainer when it fails."""

    def __init__(self, pool: Upkeep[Any]):
        self._pool = pool

    def run(self) -> None:
        self._pool._open_one(self)


class Upkeep(Generic[C]):
    """The connection supply of a pool; mixed into ``GenericPool``."""

    name: str
    options: PoolOptions
    outage: OutageLog
    _driver: Driver[C]
    _lock: threading.Lock
    _filled: threading.Condition
    _idle: deque[C]
    _waiters: WaitQueue[C]
    _out: dict[int, C]
    _expires: dict[int, float]
    _nconns: int
    _opening: int
    _min_idle: int
    _counts: dict[str, int]
    _closed: bool
    _usage: Usage
    _maintainer: Maintainer
    _opener: Opener

    def sweep_idle(self) -> None:
        """Look at each idle connection once: replace the dead, retire the expired.

        Run by the maintenance thread every ``health_check_interval``.
        """
        now = time.monotonic()
        with self._lock:
            dead = [conn for conn in self._idle if not self._driver.is_alive(conn)]
            expired = [
                conn
                for conn in self._idle
                if conn not in dead and self._expires.get(id(conn), now) < now
            ]
            for conn in (*dead, *expired):
                self._idle.remove(conn)
        for _ in dead:
            self._usage.count(usage.REPLACED)
            logger.info("replacing a dead connection of pool %r", self.name)
        for conn in (*dead, *expired):
            self._discard(conn)

    def _serve_locked(self, conn: C) -> bool:
        """Hand ``conn`` to the oldest waiter, checked out; False if none waits."""
        if not len(self._waiters):
            return False
        self._out[id(conn)] = conn
        return self._waiters.serve(conn)

    def _discard(self, conn: C) -> None:
        """Close a connection the pool no longer holds; open a replacement."""
        self._driver.close(conn)  # again if reset() closed it: harmless
        with self._lock:
            self._expires.pop(id(conn), None)
            self._nconns -= 1
            to_open = self._to_open_locked()
        self._start_opening(to_open)

    def _to_open_locked(self) -> int:
        """How many connections to start opening: up to ``pool_size`` always,
        and beyond it one per waiting client that none being opened covers."""
        if self._closed:
            return 0
        missing = self.options.pool_size - self._nconns
        uncovered = len(self._waiters) - self._opening
        count = min(max(missing, uncovered, 0), self.options.max_size - self._nconns)
        self._nconns += count
        self._opening += count
        return count

    def _start_opening(self, count: int) -> None:
        for _ in range(count):
            self._opener.submit(_Opening(self))

    def _submit(self, task: _Opening) -> None:
        """The maintainer hands back parked attempts here once connecting works."""
        self._opener.submit(task)

    def _open_one(self, task: _Opening) -> None:
        """Open one connection (in a worker), for a waiter or the idle deque."""
        conn = None
        if not self._closed:
            if self.outage.claim() > 0:
                # The server refused the last login: no attempt before the
                # backoff allows one (the reconnect probe retries it).
                self._maintainer.park(task)
                return
            try:
                conn = self._driver.connect()
            except Exception as exc:
                self.outage.failed(exc)
                with self._lock:
                    self._counts["errors"] += 1
                if not self._closed:
                    # Retried by the maintenance thread's reconnect probe.
                    self._maintainer.park(task)
                    return
            else:
                self.outage.succeeded()
        lifetime = self.options.max_lifetime * random.uniform(0.95, 1.0)
        with self._lock:
            self._opening -= 1
            if conn is not None and not self._closed:
                self._counts["opened"] += 1
                self._expires[id(conn)] = time.monotonic() + lifetime
                if not self._serve_locked(conn):
                    self._idle.append(conn)
                self._filled.notify_all()
                return
            self._nconns -= 1
        if conn is not None:
            self._driver.close(conn)

    def _shrink(self) -> None:
        """Every ``max_idle``: close one connection above ``pool_size`` if the
        pool always had one idle meanwhile (psycopg_pool's rule)."""
        with self._lock:
            victim = None
            if (
                self._min_idle > 0
                and self._idle
                and self._nconns > self.options.pool_size
            ):
                victim = self._idle.popleft()
                self._nconns -= 1
                self._expires.pop(id(victim), None)
            self._min_idle = len(self._idle)
        if victim is not None:
            logger.info("pool %r shrinks by one idle connection", self.name)
            self._driver.close(victim)
