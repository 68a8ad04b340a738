"""A pool for any DB-API driver, with SelectoPool's behaviour.

psycopg_pool pools psycopg connections only, so MySQL's get this pool. What
is specific to a driver (opening, testing, resetting, closing a connection)
comes from a ``Driver`` (``driver``); opening and retiring connections in the
background is ``upkeep``'s; the rest is shared with ``SelectoPool`` (set up
by ``base``): the usage counters (``usage``), leak detection (``leaks``), the
maintenance thread with its health sweeps and reconnect probe
(``maintenance``), the stats and their timeout message (``stats``), fork
detection (``forks``) and the errors.

What psycopg_pool does for SelectoPool, this module does itself, on the same
design: ``pool_size`` connections kept open, up to ``max_overflow`` more
opened in the background for waiting clients and closed again, one every
``max_idle``, while the pool never ran short meanwhile; ``max_lifetime`` with
up to 5 % jitter, checked at checkout, on return and by the sweeps; waiting
clients served strictly first come, first served (``waiters``). One choice
differs: idle connections are handed out most recently returned first,
where psycopg_pool rotates through them (see ``_take``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import TypeVar

from .._config.options import PoolOptions
from .._conn.outages import OutageLog
from ..errors import CheckoutTimeout, PoolClosed, PoolStartError
from . import forks, usage
from .base import PoolBase, checkout_timeout, not_checked_out, wait_at_most
from .driver import Driver
from .opener import Opener
from .stats import PoolStats, cache_totals, exhausted_message, percentile
from .upkeep import Upkeep
from .waiters import WaitQueue

logger = logging.getLogger("selecto_pool.pool")

C = TypeVar("C")


class _Expired(Exception):
    """A checkout's deadline passed (turned into CheckoutTimeout)."""


class GenericPool(Upkeep[C], PoolBase):
    """A process-local pool of DB-API connections to one database."""

    def __init__(
        self,
        *,
        name: str,
        options: PoolOptions,
        driver: Driver[C],
        check: Callable[[C], object] | None = None,
        target: object = None,
    ):
        self.name = name
        self.timeout = options.checkout_timeout
        self.outage = OutageLog(name, options.login_retry_max)
        self._init_base(
            name,
            options,
            target,
            run_task=weakref.WeakMethod(self._submit),
            retry_delay=self.outage.retry_delay,
        )
        self._driver = driver
        self._check = check
        # Everything below is changed under this lock; I/O happens outside it.
        self._lock = threading.Lock()
        self._filled = threading.Condition(self._lock)
        self._idle: deque[C] = deque()
        self._waiters: WaitQueue[C] = WaitQueue()
        # Checked out, by id: held, so that a connection dropped by its user
        # is reported as a leak rather than closed behind the pool's back.
        self._out: dict[int, C] = {}
        self._expires: dict[int, float] = {}
        self._nconns = 0  # open or being opened (parked attempts included)
        self._opening = 0
        self._min_idle = 0  # fewest idle connections since the last shrink
        self._counts = {"opened": 0, "errors": 0, "lost": 0}
        self._closed = True
        self._was_opened = False
        self._opener = Opener(name, options.max_idle, weakref.WeakMethod(self._shrink))

    @property
    def closed(self) -> bool:
        return self._closed

    # -- checkout and checkin ---------------------------------------------
    def getconn(self, timeout: float | None = None) -> C:
        """Hand out a live connection, or raise ``CheckoutTimeout``."""
        self.check_usable()
        timeout = self.timeout if timeout is None else checkout_timeout(timeout)
        started = time.monotonic()
        self._usage.start_waiting()
        try:
            conn = self._next_live(started + timeout)
        except _Expired:
            self._usage.stop_waiting()
            raise self.timed_out(timeout) from None
        except BaseException:
            self._usage.stop_waiting()
            raise
        self._usage.checked_out((time.monotonic() - started) * 1000.0)
        if self._leaks is not None:
            self._leaks.checked_out(conn)
        return conn

    def check_usable(self) -> None:
        """Raise ``PoolClosed`` as ``getconn()`` would (closed, stopping, or
        a forked parent's): for a wrapper, before it waits on its own."""
        if self._born_in != forks.current() or self._draining or self._closed:
            self._refuse()

    @contextlib.contextmanager
    def waiting_outside(self) -> Iterator[None]:
        """Count a client waiting in a wrapper's own queue as waiting here."""
        self._usage.start_waiting()
        try:
            yield
        finally:
            self._usage.stop_waiting()

    def timed_out(self, timeout: float) -> CheckoutTimeout:
        """The error of a checkout that waited ``timeout`` s in vain (here,
        or in an async wrapper's queue), counted and logged as this pool's."""
        self._usage.start_waiting()
        self._usage.stop_waiting(usage.TIMEOUTS)
        message = exhausted_message(self.stats(), timeout, self.outage)
        logger.warning("%s", message)
        return CheckoutTimeout(message)

    def getconn_if_idle(self) -> C | None:
        """An idle live connection now, or None: never waits, never grows the pool.

        For ``/health/db``: it must not queue ahead of the application nor
        open connections that linger for ``max_idle``.
        """
        if self._born_in != forks.current() or self._draining or self._closed:
            self._refuse()
        while True:
            with self._lock:
                if self._closed or not self._idle:
                    return None
                conn = self._idle.pop()
                self._min_idle = min(self._min_idle, len(self._idle))
                self._out[id(conn)] = conn
            if self._usable(conn):
                self._usage.start_waiting()
                self._usage.checked_out(None)
                return conn

    def putconn(self, conn: C, *, reset: bool = True) -> None:
        """Take a connection back, clean: no transaction, autocommit on.

        (``reset`` is the ``reset`` option's, which MySQL pools don't have.)
        """
        if self._born_in != forks.current():
            return  # inherited across fork(): the socket is the parent's
        with self._lock:
            # Before any side effect: a connection returned twice, or to the
            # wrong pool, may be in someone else's hands now.
            if self._out.get(id(conn)) is not conn:
                raise not_checked_out(self.name)
            del self._out[id(conn)]
        if self._leaks is not None:
            self._leaks.returned(conn)
        try:
            try:
                outcome = self._driver.reset(conn)
            except Exception:
                logger.exception("pool %r: resetting a connection failed", self.name)
                outcome = "broken"
            if outcome == "rolled back":
                self._usage.count(usage.ROLLBACKS)
                logger.info("rolling back a connection returned to %r", self.name)
            if outcome == "broken":
                with self._lock:
                    self._counts["lost"] += 1
                self._discard(conn)
            elif self._expired(conn):
                self._discard(conn)
            else:
                self._give_back(conn)
        finally:
            self._usage.checked_in()

    # -- lifecycle -----------------------------------------------------------
    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Start opening ``pool_size`` connections (in the background)."""
        if not self._closed and not wait:
            return  # already open: the ORM calls open() before every checkout
        with self._lock:
            if self._closed and self._was_opened:
                raise PoolClosed(f"pool {self.name!r} is closed")
            starting = self._closed
            self._closed = False
            self._was_opened = True
            to_open = self._to_open_locked()
        if starting:
            self._opener.start()
            self._maintainer.start()
        self._start_opening(to_open)
        if wait:
            self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> None:
        """Block until ``pool_size`` connections are open."""
        deadline = time.monotonic() + timeout
        with self._filled:
            while self._nconns - self._opening < self.options.pool_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    raise PoolStartError(
                        f"pool {self.name!r} could not open its "
                        f"{self.options.pool_size} connection(s) within {timeout} s"
                    )
                self._filled.wait(min(remaining, threading.TIMEOUT_MAX))

    def close(self, timeout: float = 5.0) -> None:
        """Close idle connections now, returned ones when they come back."""
        if self._born_in != forks.current():
            return  # a pool inherited across fork(): its sockets are the parent's
        timeout = wait_at_most(timeout)
        with self._lock:
            self._closed = True
            self._was_opened = True
            idle = list(self._idle)
            self._idle.clear()
            self._nconns -= len(idle)
            for conn in idle:
                self._expires.pop(id(conn), None)
            self._waiters.fail_all(PoolClosed(f"pool {self.name!r} is closed"))
            self._filled.notify_all()
        for callback in self._close_callbacks:
            callback()
        self._maintainer.stop(timeout)
        self._opener.stop(timeout)
        for conn in idle:
            self._driver.close(conn)

    def clear_prepared(self) -> int:
        """Nothing to deallocate: these connections prepare nothing. Returns 0."""
        return 0

    # -- introspection ----------------------------------------------------
    def stats(self) -> PoolStats:
        now = self._usage.snapshot()
        with self._lock:
            connections, idle = self._nconns, len(self._idle)
            counts = dict(self._counts)
        return PoolStats(
            name=self.name,
            pool_size=self.options.pool_size,
            max_overflow=self.options.max_overflow,
            connections=connections,
            idle=idle,
            in_use=now.in_use,
            overflow=max(connections - self.options.pool_size, 0),
            waiting=now.waiting,
            checkouts=now.counts[usage.CHECKOUTS],
            checkout_timeouts=now.counts[usage.TIMEOUTS],
            connection_errors=counts["errors"],
            connections_replaced=now.counts[usage.REPLACED] + counts["lost"],
            rollbacks_on_return=now.counts[usage.ROLLBACKS],
            connections_opened=counts["opened"],
            checkout_wait_p50_ms=percentile(now.waits, 50),
            checkout_wait_p99_ms=percentile(now.waits, 99),
            started_at=self.started_at,
            **cache_totals([]),
            leaks=self._leaks.leaks if self._leaks is not None else 0,
            closed=self._closed,
        )

    # -- internals -----------------------------------------------------------
    def _refuse(self) -> None:
        self._refuse_if_unusable()
        raise PoolClosed(f"pool {self.name!r} is closed")

    def _next_live(self, deadline: float) -> C:
        """The oldest idle connection, or the next one freed, that is usable."""
        while True:
            conn = self._take(deadline)
            if self._usable(conn):
                return conn

    def _take(self, deadline: float) -> C:
        with self._lock:
            if self._closed:
                raise PoolClosed(f"pool {self.name!r} is closed")
            if self._idle:
                # The most recently returned: its session is warm on the
                # server and in this process (rotating through four cost
                # about 10 % more time per 3-query request here), and the
                # others stay idle for the max_idle shrink, coldest first.
                conn = self._idle.pop()
                self._min_idle = min(self._min_idle, len(self._idle))
                self._out[id(conn)] = conn
                return conn
            waiter = self._waiters.join()
            to_open = self._to_open_locked()
        self._start_opening(to_open)
        try:
            served = waiter.wait(deadline - time.monotonic())
        except BaseException:
            # Interrupted (KeyboardInterrupt...): leave the queue, and give
            # back a connection handed over meanwhile, or it would be lost.
            with self._lock:
                handed = not self._waiters.leave(waiter)
            if handed and waiter.conn is not None:
                self.putconn(waiter.conn)
            raise
        if not served:
            with self._lock:
                if self._waiters.leave(waiter):
                    raise _Expired
            # Served while giving up: the connection is ours.
        if waiter.error is not None:
            raise waiter.error
        assert waiter.conn is not None
        return waiter.conn

    def _usable(self, conn: C) -> bool:
        """Test a connection just taken; discard (and replace) it if unusable."""
        if not self._driver.is_alive(conn):
            self._usage.count(usage.REPLACED)
            logger.info("replacing a dead connection of pool %r", self.name)
        elif self._expired(conn):
            pass  # retired quietly, as psycopg_pool does
        elif self._check is None:
            return True
        else:
            try:
                self._check(conn)
                return True
            except Exception as exc:
                self._usage.count(usage.REPLACED)
                logger.info(
                    "replacing a connection of pool %r that failed its check: %s",
                    self.name,
                    type(exc).__name__,
                )
        with self._lock:
            self._out.pop(id(conn), None)
        self._discard(conn)
        return False

    def _expired(self, conn: C) -> bool:
        return self._expires.get(id(conn), float("inf")) <= time.monotonic()

    def _give_back(self, conn: C) -> None:
        with self._lock:
            if not self._closed:
                if not self._serve_locked(conn):
                    self._idle.append(conn)
                return
        self._discard(conn)
