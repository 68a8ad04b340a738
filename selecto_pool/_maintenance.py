"""The pool's own background work: one daemon thread per pool.

It does three low-frequency jobs that psycopg_pool does not:

* **Health sweeps** every ``health_check_interval``: each idle connection is
  looked at once with the no-round-trip liveness test of ``_health``, so that
  connections killed by a server restart or ``pg_terminate_backend`` are
  replaced before a request picks them, and those past ``max_lifetime`` are
  retired even if the pool is idle.
* **Leak scans** (``_leaks``), only when ``leak_detection_threshold`` is set.
* **Reconnect probes.** When a connection attempt fails, psycopg_pool retries
  it with an exponential backoff (1, 2, 4, 8... s), one timer per missing
  connection: after an outage of 10 s the next attempt may be 10 s after the
  server came back. The pool hands those retries here instead (its
  ``schedule_task`` override): they are *parked*, and one of them at a time is
  run every ``PROBE_INTERVAL``. As soon as one succeeds, the others are run at
  once. So a pool notices a recovered server within ``PROBE_INTERVAL`` while
  making one connection attempt per probe, not one per missing connection.

Why a thread of our own: psycopg_pool's scheduler and task classes are private
(its ``MaintenanceTask`` subclasses live in its implementation module), and its
workers should stay free for connecting. One thread that sleeps on an event
costs nothing measurable; it holds only a weak reference to the pool, so that
an abandoned pool can still be garbage-collected, and it is stopped by
``close()``.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

import psycopg_pool

from ._leaks import LeakDetector

if TYPE_CHECKING:
    from ._pool import SelectoPool

logger = logging.getLogger("selecto_pool")

#: Seconds between two connection attempts while the server is unreachable.
PROBE_INTERVAL = 0.5
# How long the sweep waits to take an idle connection before giving up (the
# pool got busy: whoever took the connection checks it anyway).
_TAKE_TIMEOUT = 0.01


class Maintainer:
    """The maintenance thread of one pool (started by ``open()``)."""

    def __init__(
        self,
        pool: SelectoPool,
        health_check_interval: float,
        leaks: LeakDetector | None,
    ):
        self._pool = weakref.ref(pool)
        self._name = pool.name
        self._health_interval = health_check_interval
        self._leaks = leaks
        self._lock = threading.Lock()
        self._parked: deque[Any] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once; ``open()`` may be called on every checkout)."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(
                target=self._run,
                name=f"selecto-pool-maintenance-{self._name}",
                daemon=True,
            )
            self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop the thread; parked reconnection attempts are dropped."""
        with self._lock:
            self._stopping = True
            self._parked.clear()
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            # A probe may be connecting (bounded by connect_timeout); the
            # thread is a daemon, so not waiting for it never blocks exit.
            thread.join(max(timeout, 0.0))

    def park(self, task: Any) -> None:
        """Keep a failed connection attempt until the next probe or recovery."""
        with self._lock:
            if self._stopping:
                return
            self._parked.append(task)
        self._wake.set()

    @property
    def reconnecting(self) -> int:
        """Connection attempts waiting for the server to come back."""
        return len(self._parked)

    # -- the thread ------------------------------------------------------------
    def _run(self) -> None:
        now = time.monotonic()
        next_sweep = now + self._health_interval if self._health_interval else math.inf
        next_scan = now + self._leaks.scan_interval if self._leaks else math.inf
        next_probe = math.inf
        while True:
            self._wake.clear()
            with self._lock:
                if self._stopping:
                    return
                parked = bool(self._parked)
            now = time.monotonic()
            if not parked:
                next_probe = math.inf
            elif next_probe == math.inf:
                # Jittered, so that processes restarted together don't probe
                # in lockstep.
                next_probe = now + PROBE_INTERVAL * random.uniform(0.8, 1.0)
            due = min(next_sweep, next_scan, next_probe)
            if due > now:
                self._wake.wait(None if due == math.inf else due - now)
                continue
            pool = self._pool()
            if pool is None or pool.closed:
                return
            try:
                if next_probe <= now:
                    next_probe = math.inf
                    self._probe(pool)
                if next_sweep <= now:
                    next_sweep = now + self._health_interval
                    sweep_idle(pool)
                if self._leaks is not None and next_scan <= now:
                    next_scan = now + self._leaks.scan_interval
                    self._leaks.scan()
            except Exception:
                # Never let the thread die: the next round may well succeed.
                logger.exception("pool %r: maintenance failed", self._name)
            finally:
                del pool

    def _probe(self, pool: SelectoPool) -> None:
        """Run one parked attempt here; if it connects, run the others now."""
        with self._lock:
            if not self._parked:
                return
            task = self._parked.popleft()
            left = len(self._parked)
        # psycopg_pool's task connects, adds the connection to the pool, or
        # (on failure) schedules its retry, i.e. parks it here again.
        task.run()
        with self._lock:
            if len(self._parked) > left:
                return
            released = list(self._parked)
            self._parked.clear()
        if released:
            logger.info(
                "pool %r: connecting works again, retrying %d connection(s) now",
                self._name,
                len(released),
            )
        for retry in released:
            pool.run_task(retry)


def sweep_idle(pool: SelectoPool) -> None:
    """Look at each idle connection once: replace the dead, retire the expired.

    Connections are taken with psycopg_pool's own ``getconn``/``putconn`` (not
    the pool's overrides), so that sweeping counts no checkout.
    """
    idle = pool.get_stats().get("pool_available", 0)
    for _ in range(idle):
        try:
            conn = psycopg_pool.ConnectionPool.getconn(pool, timeout=_TAKE_TIMEOUT)
        except (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed):
            return
        if pool._vet(conn):
            psycopg_pool.ConnectionPool.putconn(pool, conn)
