"""The async pool's background work: one task in its event loop.

The same three jobs as the sync pool's maintenance thread (see
``maintenance``), on the same schedule: health sweeps of idle connections
every ``health_check_interval``, leak scans when ``leak_detection_threshold``
is set, and reconnect probes: psycopg_pool's retries of failed connection
attempts are parked here (the pool's ``schedule_task`` override) and one of
them at a time is run when the pool's ``retry_delay()`` says; as soon as one
connects, the others are run at once.

A task rather than a thread: the sweep and the probes are the pool's own
coroutines, which must run in the loop that owns its connections, and a task
ends with its loop. It never dies of an error: a round that raises is logged
and the next one is tried after a growing pause. Only cancellation (``stop()``
or the loop shutting down, which it tells the pool) ends it. It knows the
pool through weak callbacks, so that an abandoned pool can still be
garbage-collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from .leaks import LeakDetector
from .maintenance import _FIRST_PAUSE, _LONGEST_PAUSE, _LONGEST_WAIT, WeakCallback

logger = logging.getLogger("selecto_pool.pool")


class AsyncMaintainer:
    """The maintenance task of one async pool (started by ``open()``)."""

    def __init__(
        self,
        name: str,
        health_check_interval: float,
        leaks: LeakDetector | None,
        *,
        sweep: WeakCallback,
        run_task: WeakCallback,
        retry_delay: Callable[[], float],
        loop_ending: WeakCallback,
    ):
        self._name = name
        #: Weak: give the pool's ``sweep_idle`` coroutine function and its
        #: ``run_task``, or None once the pool is gone.
        self._sweep = sweep
        self._run_task = run_task
        self._retry_delay = retry_delay
        #: Called when the task is cancelled by someone else than stop():
        #: the loop shuts down with the pool open.
        self._loop_ending = loop_ending
        self._health_interval = health_check_interval
        self._leaks = leaks
        self._parked: deque[Any] = deque()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._next_sweep = self._next_scan = self._next_probe = math.inf

    def start(self) -> None:
        """Start the task in the running loop (once)."""
        if self._task is None and not self._stopping:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"selecto-pool-maintenance-{self._name}"
            )

    async def stop(self) -> None:
        """Stop the task; parked reconnection attempts are dropped."""
        self._stopping = True
        self._parked.clear()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def park(self, task: Any) -> None:
        """Keep a failed connection attempt until the next probe or recovery."""
        if not self._stopping:
            self._parked.append(task)
            self._wake.set()

    # -- the task ----------------------------------------------------------------
    async def _run(self) -> None:
        """Rounds until stopped; a round that raises is logged, then retried."""
        try:
            await self._rounds()
        except asyncio.CancelledError:
            if not self._stopping and (loop_ending := self._loop_ending()):
                loop_ending()
            raise

    async def _rounds(self) -> None:
        now = time.monotonic()
        if self._health_interval:
            self._next_sweep = now + self._health_interval
        if self._leaks is not None:
            self._next_scan = now + self._leaks.scan_interval
        failed_rounds = 0
        while not self._stopping:
            try:
                if not await self._round():
                    return
                failed_rounds = 0
            except Exception:
                # Never let the task die: the next round may well succeed.
                failed_rounds += 1
                logger.exception(
                    "pool %r: maintenance failed (%d time(s) in a row); going on",
                    self._name,
                    failed_rounds,
                )
                pause = _FIRST_PAUSE * 2.0 ** min(failed_rounds - 1, 16)
                await asyncio.sleep(min(pause, _LONGEST_PAUSE))

    async def _round(self) -> bool:
        """Wait for the next job due and run it; False when the task must end."""
        self._wake.clear()
        now = time.monotonic()
        if not self._parked:
            self._next_probe = math.inf
        elif self._next_probe == math.inf:
            self._next_probe = now + self._retry_delay()
        due = min(self._next_sweep, self._next_scan, self._next_probe)
        if due > now:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(due - now, _LONGEST_WAIT))
            return True
        sweep, run_task = self._sweep(), self._run_task()
        if sweep is None or run_task is None:
            return False  # the pool is gone
        if self._next_probe <= now:
            self._next_probe = math.inf
            await self._probe(run_task)
        if self._next_sweep <= now:
            self._next_sweep = now + self._health_interval
            await sweep()
        if self._leaks is not None and self._next_scan <= now:
            self._next_scan = now + self._leaks.scan_interval
            self._leaks.scan()
        return True

    async def _probe(self, run_task: Callable[[Any], None]) -> None:
        """Run one parked attempt here; if it connects, run the others now."""
        if not self._parked:
            return
        task = self._parked.popleft()
        left = len(self._parked)
        # psycopg_pool's task connects, adds the connection to the pool, or
        # (on failure) schedules its retry, i.e. parks it here again.
        attempt: Awaitable[None] = task.run()
        await attempt
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
