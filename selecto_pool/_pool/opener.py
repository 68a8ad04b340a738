"""Background threads that open a pool's connections, and run its timer.

Connecting happens off the caller's thread, as in psycopg_pool: a client
whose timeout expires doesn't lose the connection it caused to be opened (the
next waiter gets it), and a slow or unreachable server delays the clients
that wait, never the pool's bookkeeping. A few workers let several
connections open at once (the initial fill, a burst), while a failed attempt
is not retried here but handed to the maintenance thread's reconnect probe
(see ``maintenance``).

The first worker also runs one periodic job (the pool shrinks its overflow
every ``max_idle``), so that it needs no thread of its own. Workers log and
carry on when a task raises: they never die silently.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

logger = logging.getLogger("selecto_pool.pool")

#: Connections opened at once (psycopg_pool's default ``num_workers``).
WORKERS = 3


class Task(Protocol):
    def run(self) -> None: ...


# A weak reference to a bound method: called, it gives the method or None.
WeakCallback = Callable[[], Callable[[], Any] | None]


class Opener:
    """The worker threads of one pool (started by ``start()``, once)."""

    def __init__(self, name: str, every: float, periodic: WeakCallback):
        self._name = name
        self._every = every
        self._periodic = periodic
        self._tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopping = False

    def start(self) -> None:
        with self._lock:
            if self._threads or self._stopping:
                return
            self._threads = [
                threading.Thread(
                    target=self._work,
                    args=(number == 0,),
                    name=f"selecto-pool-opener-{self._name}-{number}",
                    daemon=True,
                )
                for number in range(WORKERS)
            ]
            for thread in self._threads:
                thread.start()

    def submit(self, task: Task) -> None:
        self._tasks.put(task)

    def stop(self, timeout: float) -> None:
        """Stop the workers; tasks not started yet are dropped."""
        with self._lock:
            self._stopping = True
            threads = list(self._threads)
        for _ in threads:
            self._tasks.put(None)
        deadline = time.monotonic() + max(timeout, 0.0)
        for thread in threads:
            if thread is not threading.current_thread():
                # A worker may be connecting (bounded by connect_timeout);
                # they are daemons, so not waiting never blocks exit.
                thread.join(max(deadline - time.monotonic(), 0.0))

    def _work(self, runs_timer: bool) -> None:
        next_run = time.monotonic() + self._every
        while True:
            timeout = (
                min(max(next_run - time.monotonic(), 0.0), threading.TIMEOUT_MAX)
                if runs_timer
                else None
            )
            try:
                task = self._tasks.get(timeout=timeout)
            except queue.Empty:
                task = None
                if self._stopping:
                    return
            else:
                if task is None:
                    return
            try:
                if task is not None:
                    task.run()
                if runs_timer and time.monotonic() >= next_run:
                    next_run = time.monotonic() + self._every
                    periodic = self._periodic()
                    if periodic is None:
                        # The pool is gone: so are the other workers' tasks.
                        for _ in range(WORKERS - 1):
                            self._tasks.put(None)
                        return
                    periodic()
                    del periodic
            except Exception:
                logger.exception("pool %r: a background task failed", self._name)
