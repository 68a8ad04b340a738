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
  run when the pool's ``retry_delay()`` says (see ``_conn.outages``): every
  ``PROBE_INTERVAL`` while the server doesn't answer, backing off to
  ``login_retry_max`` while it refuses logins. As soon as one succeeds, the
  others are run at once. So a pool notices a restarted server within
  ``PROBE_INTERVAL`` while making one connection attempt per probe, not one
  per missing connection.

The thread never dies of an error: a round that raises is logged and the
next one is tried after a pause (growing while rounds keep failing), and no
wait is longer than ``_LONGEST_WAIT``, which a thread's wait can always take.

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

from .._conn.outages import PROBE_INTERVAL
from .leaks import LeakDetector

logger = logging.getLogger("selecto_pool.pool")

# A weak reference to a bound method: called, it gives the method or None.
WeakCallback = Callable[[], Callable[..., Any] | None]

# The longest single wait: far below threading.TIMEOUT_MAX, and waking up
# now and then to find nothing due costs nothing.
_LONGEST_WAIT = 300.0
# The pause after a round that raised, doubling while rounds keep failing.
_FIRST_PAUSE = 0.1
_LONGEST_PAUSE = 30.0


def _probe_interval() -> float:
    return PROBE_INTERVAL * random.uniform(0.8, 1.0)


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
        retry_delay: Callable[[], float] = _probe_interval,
    ):
        self._name = name
        self._sweep = sweep
        self._run_task = run_task
        #: Seconds before the next reconnect probe (the pool's backoff).
        self._retry_delay = retry_delay
        self._health_interval = health_check_interval
        self._leaks = leaks
        self._lock = threading.Lock()
        self._parked: deque[Any] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # When each job is next due (monotonic); set when the thread starts.
        self._next_sweep = self._next_scan = self._next_probe = math.inf

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
            thread.join(min(max(timeout, 0.0), _LONGEST_WAIT))

    def park(self, task: Any) -> None:
        """Keep a failed connection attempt until the next probe or recovery."""
        with self._lock:
            if self._stopping:
                return
            self._parked.append(task)
        self._wake.set()

    # -- the thread ------------------------------------------------------------
    def _run(self) -> None:
        """Rounds until stopped; a round that raises is logged, then retried."""
        scheduled = False
        failed_rounds = 0
        while True:
            try:
                if not scheduled:
                    self._schedule_jobs()
                    scheduled = True
                if not self._round():
                    return
                failed_rounds = 0
            except Exception:
                # Never let the thread die: the next round may well succeed.
                failed_rounds += 1
                logger.exception(
                    "pool %r: maintenance failed (%d time(s) in a row); going on",
                    self._name,
                    failed_rounds,
                )
                pause = _FIRST_PAUSE * 2.0 ** min(failed_rounds - 1, 16)
                self._wake.wait(min(pause, _LONGEST_PAUSE))

    def _schedule_jobs(self) -> None:
        now = time.monotonic()
        if self._health_interval:
            self._next_sweep = now + self._health_interval
        if self._leaks is not None:
            self._next_scan = now + self._leaks.scan_interval

    def _round(self) -> bool:
        """Wait for the next job due and run it; False when the thread must end."""
        self._wake.clear()
        with self._lock:
            if self._stopping:
                return False
            parked = bool(self._parked)
        now = time.monotonic()
        if not parked:
            self._next_probe = math.inf
        elif self._next_probe == math.inf:
            self._next_probe = now + self._retry_delay()
        due = min(self._next_sweep, self._next_scan, self._next_probe)
        if due > now:
            self._wake.wait(min(due - now, _LONGEST_WAIT))
            return True
        sweep, run_task = self._sweep(), self._run_task()
        if sweep is None or run_task is None:
            return False  # the pool is gone
        if self._next_probe <= now:
            self._next_probe = math.inf
            self._probe(run_task)
        if self._next_sweep <= now:
            self._next_sweep = now + self._health_interval
            sweep()
        if self._leaks is not None and self._next_scan <= now:
            self._next_scan = now + self._leaks.scan_interval
            self._leaks.scan()
        return True

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
