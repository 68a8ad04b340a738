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
costs nothing measurable. It knows the pool only through weak callbacks
(sweep, run a task), so that an abandoned pool can still be
garbage-collected, and it is stopped by ``close()``.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .leaks import LeakDetector

logger = logging.getLogger("selecto_pool.pool")

#: Seconds between two connection attempts while the server is unreachable.
PROBE_INTERVAL = 0.5

# A weak reference to a bound method: called, it gives the method or None.
WeakCallback = Callable[[], Callable[..., Any] | None]


class Maintainer:
    """The maintenance thread of one pool (started by ``open()``)."""

    def __init__(
        self,
        name: str,
        health_check_interval: float,
        leaks: LeakDetector | None,
        *,
        sweep: WeakCallback,
        run_task: WeakCallback,
    ):
        self._name = name
        self._sweep = sweep
        self._run_task = run_task
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
            sweep, run_task = self._sweep(), self._run_task()
            if sweep is None or run_task is None:
                return  # the pool is gone
            try:
                if next_probe <= now:
                    next_probe = math.inf
                    self._probe(run_task)
                if next_sweep <= now:
                    next_sweep = now + self._health_interval
                    sweep()
                if self._leaks is not None and next_scan <= now:
                    next_scan = now + self._leaks.scan_interval
                    self._leaks.scan()
            except Exception:
                # Never let the thread die: the next round may well succeed.
                logger.exception("pool %r: maintenance failed", self._name)
            finally:
                del sweep, run_task

    def _probe(self, run_task: Callable[[Any], None]) -> None:
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
            run_task(retry)
