"""What every pool keeps besides its connections, whichever driver they use.

``SelectoPool`` (on psycopg_pool) and ``GenericPool`` (any DB-API driver)
both mix in ``PoolBase``: the process the pool belongs to, its usage
counters, leak detection and maintenance thread, the callbacks run when it
closes, and the refusals of a pool inherited across ``fork()`` or stopping.
``AsyncSelectoPool`` mixes in ``PoolState``, all of that but the thread and
the sync ``stop()`` (its maintenance is a task, its stop awaited).
Checkout and checkin stay in each pool, without a call to this module: they
are the hot path. ``PoolBase`` comes last among a pool's bases, so that its
``super()`` calls (psycopg_pool's ``getconn``...) look through no extra class.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Callable
from typing import Any

from .._config.options import MAXIMA, PoolOptions
from ..errors import PoolClosed
from . import forks
from .leaks import LeakDetector
from .maintenance import Maintainer, WeakCallback
from .usage import Usage

logger = logging.getLogger("selecto_pool.pool")

# The longest wait at stop or close (a day): longer ones overflow threading's.
_LONGEST_WAIT = MAXIMA["checkout_timeout"]


def checkout_timeout(timeout: float) -> float:
    """A checkout's ``timeout=``, or ``ValueError`` past the longest (NaN too)."""
    if not timeout <= _LONGEST_WAIT:
        raise ValueError(f"checkout timeout {timeout!r}: at most 86400 s")
    return timeout


def not_checked_out(pool_name: str) -> ValueError:
    """The error for a connection returned twice, or to the wrong pool: it
    may be in someone else's hands, so nothing is done to it."""
    return ValueError(
        f"can't return a connection to pool {pool_name!r}: it is not "
        "checked out from it (returned twice, or to the wrong pool?)"
    )


def wait_at_most(timeout: float) -> float:
    """``timeout``, within what a thread can wait (negative or NaN: 0)."""
    return min(timeout, _LONGEST_WAIT) if timeout >= 0 else 0.0  # NaN: 0


class PoolState:
    """The state every pool keeps, sync or async; mixed in last."""

    name: str
    options: PoolOptions
    #: What the pool connects to; the registry replaces a pool whose
    #: target no longer matches the settings (e.g. the test database).
    target: Any
    owner_pid: int
    started_at: float
    _born_in: int
    _usage: Usage
    _draining: bool
    _close_callbacks: list[Callable[[], None]]
    _leaks: LeakDetector | None
    _opened_once: bool
    #: How a forked child gets a pool of its own (said by ``PoolClosed``).
    _in_a_child = "a forked process gets its own pool from get_pool() or the ORM"

    def _init_state(self, name: str, options: PoolOptions, target: Any) -> None:
        self.options = options
        self.target = target
        self.owner_pid = os.getpid()
        forks.watch()
        self._born_in = forks.current()
        self.started_at = time.time()
        self._close_callbacks = []
        self._usage = Usage()
        self._draining = False
        self._opened_once = False
        # Nothing is recorded at checkout unless leak detection is on.
        self._leaks = (
            LeakDetector(name, options.leak_detection_threshold)
            if options.leak_detection_threshold
            else None
        )

    def add_close_callback(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the pool closes (e.g. stop its responder)."""
        self._close_callbacks.append(callback)

    def _refuse_reopening(self) -> None:
        """Raise ``PoolClosed`` if the pool was opened and then closed.

        Closed by hand (``close()``, not ``stop_pool()``), a pool stays the
        alias's, as Django's native pool does; say what builds a new one.
        Checked here: psycopg_pool's own refusal changed class in 3.3.x.
        """
        if self._opened_once:
            raise PoolClosed(
                f"pool {self.name!r} was closed; stop_pool() or the ORM's "
                "close_pool() lets the next query build a new one"
            )

    def _refuse_if_unusable(self) -> None:
        """Raise ``PoolClosed`` if the pool is a forked parent's, or stopping."""
        if self._born_in != forks.current():
            raise PoolClosed(
                f"pool {self.name!r} belongs to process {self.owner_pid}; "
                f"{self._in_a_child}"
            )
        if self._draining:
            raise PoolClosed(f"pool {self.name!r} is stopping")


class PoolBase(PoolState):
    """Mixed into a sync pool class, after its connection-handling base."""

    _maintainer: Maintainer
    # Each pool's own: the maintenance thread runs sweep_idle(), stop() ends
    # with close().
    sweep_idle: Callable[[], None]
    close: Callable[..., None]

    def _init_base(
        self,
        name: str,
        options: PoolOptions,
        target: Any,
        *,
        run_task: WeakCallback,
        retry_delay: Callable[[], float],
    ) -> None:
        """Set up the shared state; ``run_task`` runs a parked reconnection."""
        self._init_state(name, options, target)
        # Weak callbacks: an abandoned pool can still be garbage-collected.
        self._maintainer = Maintainer(
            name,
            options.health_check_interval,
            self._leaks,
            sweep=weakref.WeakMethod(self.sweep_idle),
            run_task=run_task,
            retry_delay=retry_delay,
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Refuse new checkouts, wait up to ``timeout`` for checkins, close."""
        deadline = time.monotonic() + wait_at_most(timeout)
        self._draining = True
        still_out = self._usage.wait_for_returns(deadline)
        if still_out:
            logger.warning(
                "stopping pool %r with %d connection(s) still checked out; "
                "they are closed when returned",
                self.name,
                still_out,
            )
        self.close(timeout=max(deadline - time.monotonic(), 0.1))
