"""The async pool: psycopg_pool's ``AsyncConnectionPool`` with ``SelectoPool``'s extras.

Everything that isn't I/O is the sync pool's own collaborator: the options
and psycopg_pool's arguments from them (``psycopg_common``), the state every
pool keeps (``base.PoolState``: usage counters, leak detector, fork
generation), ``PoolStats`` (``stats.snapshot``), the timeout message, the
outage log and its backoff, the statement caches (``StatementCaches``). What
differs is awaited: liveness at checkout (a round trip only for a connection
with unexpected input), the cleaning on return (``async_reset``, with the
``reset`` option), the draining ``stop()``, and the maintenance, a task in
the pool's event loop (``async_maintenance``).

The pool belongs to the event loop that opened it (psycopg_pool's locks and
tasks do): a checkout from another loop raises ``RuntimeError``, from a forked
child ``PoolClosed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg_pool
from psycopg.pq import TransactionStatus

from .. import _compat
from .._config.options import PoolOptions
from .._conn import reset
from .._conn.async_outages import async_connection_class_for
from .._conn.async_reset import AsyncCleaner
from .._conn.liveness import ais_alive, expired
from .._conn.outages import OutageLog
from ..errors import CheckoutTimeout, PoolClosed
from . import forks, usage
from .async_maintenance import AsyncMaintainer
from .base import PoolState, checkout_timeout, not_checked_out, wait_at_most
from .psycopg_common import (
    TAKE_IDLE_TIMEOUT,
    TCP_KEEPALIVE_DEFAULTS,
    async_check,
    pool_arguments,
)
from .statement_caches import StatementCaches
from .stats import PoolStats, exhausted_message, snapshot

logger = logging.getLogger("selecto_pool.pool")

AsyncConnection = psycopg.AsyncConnection[Any]


def _cancel_requests(task: asyncio.Task[Any] | None) -> int:
    """How many cancellations of ``task`` are pending (Python 3.11+; else 0)."""
    cancelling = getattr(task, "cancelling", None)
    return int(cancelling()) if cancelling is not None else 0


class AsyncSelectoPool(psycopg_pool.AsyncConnectionPool[AsyncConnection], PoolState):
    """A pool of psycopg async connections to one database, for one event loop."""

    _in_a_child = "a forked process starts its own pool with astart_pool()"

    def __init__(
        self,
        *,
        name: str,
        options: PoolOptions,
        kwargs: dict[str, Any],
        conninfo: str = "",
    ):
        #: Direct pools have no settings to follow (see SelectoPool.target).
        self._init_state(name, options, target=None)
        connection_class, self._outage = async_connection_class_for(
            name, options.login_retry_max
        )
        # Set by checkins while a stop() drains.
        self._returned = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Cleaning a returned connection may take as long as opening one.
        self._cleaner = AsyncCleaner(
            name, reset=options.reset, timeout=options.connection_timeout
        )
        self._caches = StatementCaches(name, options)
        super().__init__(
            conninfo,
            connection_class=connection_class,
            kwargs={**TCP_KEEPALIVE_DEFAULTS, **kwargs},
            open=False,
            configure=self._configure_new,
            check=async_check(options.check),
            name=name,
            **pool_arguments(options),
        )
        self._maintainer = AsyncMaintainer(
            name,
            options.health_check_interval,
            self._leaks,
            sweep=weakref.WeakMethod(self.sweep_idle),
            run_task=weakref.WeakMethod(self.run_task),
            retry_delay=self._outage.retry_delay,
            loop_ending=weakref.WeakMethod(self._stop_workers),
        )

    # -- checkout and checkin ---------------------------------------------
    async def getconn(self, timeout: float | None = None) -> AsyncConnection:
        """Hand out a live connection, or raise ``CheckoutTimeout``."""
        self._refuse_unless_usable_here()
        timeout = self.timeout if timeout is None else checkout_timeout(timeout)
        started = time.monotonic()
        task = asyncio.current_task()
        cancel_requests = _cancel_requests(task)
        self._usage.start_waiting()
        try:
            conn = await self._next_live(started + timeout)
            if _cancel_requests(task) > cancel_requests:
                # Cancelled as psycopg_pool handed the connection over: its
                # wait (asyncio.wait_for before Python 3.12) returned the
                # connection instead. Honour the cancellation.
                await super().putconn(conn)
                raise asyncio.CancelledError
        except psycopg_pool.PoolTimeout:
            self._usage.stop_waiting(usage.TIMEOUTS)
            message = exhausted_message(self.stats(), timeout, self._outage)
            logger.warning("%s", message)
            raise CheckoutTimeout(message) from None
        except psycopg_pool.PoolClosed:
            self._usage.stop_waiting()
            raise PoolClosed(f"pool {self.name!r} is closed") from None
        except BaseException:
            self._usage.stop_waiting()
            raise
        if self._caches.preparing_stopped:
            conn.prepare_threshold = None
        self._usage.checked_out((time.monotonic() - started) * 1000.0)
        if self._leaks is not None:
            self._leaks.checked_out(conn, task=task.get_name() if task else None)
        return conn

    async def getconn_if_idle(self) -> AsyncConnection | None:
        """An idle live connection now, or None: never waits, never grows the
        pool (``SelectoPool.getconn_if_idle()``, in the pool's loop)."""
        self._refuse_unless_usable_here()
        while True:
            conn: AsyncConnection | None = await _compat.atake_ready(self)
            if conn is None or await self._vet(conn):
                break
        if conn is not None:
            self._usage.start_waiting()
            self._usage.checked_out(None)
        return conn

    async def putconn(self, conn: AsyncConnection, *, reset: bool = True) -> None:
        """Take a connection back, clean: no transaction, autocommit on, the
        client state restored (and reset with the ``reset`` option, unless
        ``reset=False``)."""
        if self._born_in != forks.current():
            # Inherited across fork(): the socket is the parent's, leave it be.
            return
        if _compat.pool_of(conn) is not self:
            # Before any side effect: a connection returned twice, or to the
            # wrong pool, may be in someone else's hands now.
            raise not_checked_out(self.name)
        if self._leaks is not None:
            self._leaks.returned(conn)
        try:
            try:
                if not self.closed:  # else psycopg_pool closes it
                    await self._clean(conn, returned=True, with_reset=reset)
            except BaseException:
                # Interrupted (a cancelled task): the session's state is
                # unknown. Closed, and given back all the same, or
                # psycopg_pool counts it as checked out for good.
                await conn.close()
                raise
            finally:
                await super().putconn(conn)
        finally:
            self._usage.checked_in()
            if self._draining:
                self._returned.set()

    # -- lifecycle -----------------------------------------------------------
    async def stop(self, timeout: float = 5.0) -> None:
        """Refuse new checkouts, wait up to ``timeout`` for checkins, close."""
        deadline = time.monotonic() + wait_at_most(timeout)
        self._draining = True
        while self._in_use() and (remaining := deadline - time.monotonic()) > 0:
            self._returned.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._returned.wait(), remaining)
        if still_out := self._in_use():
            logger.warning(
                "stopping pool %r with %d connection(s) still checked out; "
                "they are closed when returned",
                self.name,
                still_out,
            )
        await self.close(timeout=max(deadline - time.monotonic(), 0.1))

    def close_connections_now(self) -> None:
        """Close every connection of the pool from this thread, unawaited:
        for interpreter exit once its loop is gone (see ``async_exit``)."""
        self._draining = True
        for conn in self._caches.connections():
            if not conn.closed:
                conn.pgconn.finish()  # the server sees a goodbye, not a reset

    async def clear_prepared(self) -> int:
        """Deallocate prepared statements on every connection of the pool.

        Idle connections are cleared now; checked-out ones when returned.
        Returns how many connections that is.
        """
        self._caches.clear_all()
        await self._each_idle(self._clean)
        return int(self.get_stats().get("pool_size", 0))

    async def sweep_idle(self) -> None:
        """Look at each idle connection once: replace the dead, retire the expired."""
        await self._each_idle(None)

    async def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        if not wait and not self.closed:
            return
        _compat.check()
        if self.closed:
            self._refuse_reopening()
        self._loop = asyncio.get_running_loop()
        await super().open(wait=wait, timeout=timeout)
        self._opened_once = True
        self._maintainer.start()

    async def close(self, timeout: float = 5.0) -> None:
        if self._born_in != forks.current():
            # A pool inherited across fork(): its sockets are the parent's.
            return
        for callback in self._close_callbacks:
            callback()
        await self._maintainer.stop()
        await super().close(wait_at_most(timeout))

    async def schedule_task(self, task: Any, delay: float) -> None:
        # As SelectoPool.schedule_task: retries of failed connection attempts
        # go to the maintenance task's reconnect probe.
        if isinstance(task, _compat.AsyncAddConnection):
            self._maintainer.park(task)
        else:
            await super().schedule_task(task, delay)

    def statements_vanished(self) -> None:
        """A connection lost prepared statements it did not deallocate."""
        self._caches.vanished()

    def track_cursor(self, conn: AsyncConnection, cursor: Any) -> None:
        """Close the named ``cursor`` when ``conn`` is returned, if still open."""
        self._cleaner.track_cursor(conn, cursor)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the pool belongs to (None before it opened): another
        thread runs its coroutines there, ``run_coroutine_threadsafe(pool.
        clear_prepared(), pool.loop)``."""
        return self._loop

    @property
    def outage(self) -> OutageLog:
        """Failed connection attempts and the backoff (see SelectoPool.outage)."""
        return self._outage

    # -- introspection ----------------------------------------------------
    def stats(self) -> PoolStats:
        """The pool's ``PoolStats``; reads counters only, no I/O, any thread."""
        return snapshot(
            name=self.name,
            options=self.options,
            psycopg_pool_stats=self.get_stats(),
            usage=self._usage.snapshot(),
            caches=self.cache_stats(),
            leaks=self._leaks.leaks if self._leaks is not None else 0,
            started_at=self.started_at,
            closed=self.closed,
        )

    def cache_stats(self) -> list[dict[str, int]]:
        """The statement cache of each open connection (backend pid included)."""
        return self._caches.snapshot()

    # -- internals -----------------------------------------------------------
    async def _configure_new(self, conn: AsyncConnection) -> None:
        # Off unless the cache is on (psycopg's default would prepare).
        conn.prepare_threshold = None
        self._caches.install(conn)
        self._cleaner.configured(conn)

    def _stop_workers(self) -> None:
        """Let psycopg_pool's workers end with the loop that is shutting down.

        ``asyncio.run()`` ending with the pool open cancels every task and
        waits for them; psycopg_pool catches the ``CancelledError`` of a
        connection being opened (to retry it later) and its worker would
        then wait for the next task forever: it gets one that ends it.
        """
        for _ in range(self.num_workers):
            self.run_task(_compat.AsyncStopWorker(self))

    def _in_use(self) -> int:
        return self._usage.snapshot().in_use

    def _refuse_unless_usable_here(self) -> None:
        if self._born_in != forks.current() or self._draining:
            self._refuse_if_unusable()
        if self._loop is not None and asyncio.get_running_loop() is not self._loop:
            raise RuntimeError(
                f"pool {self.name!r} belongs to the event loop that started it; "
                "start a pool in each event loop that uses one"
            )

    async def _clean(
        self, conn: AsyncConnection, *, returned: bool = False, with_reset: bool = True
    ) -> None:
        """Clean ``conn`` or close it (see ``SelectoPool._clean``)."""
        status = conn.pgconn.transaction_status
        if status == TransactionStatus.IDLE and not conn.pgconn.pipeline_status:
            await self._cleaner.restore_client_state(conn)  # no I/O when idle
        current = self._caches.is_current(conn)
        resets = returned and with_reset and self._cleaner.resets
        cursors = self._cleaner.open_cursors(conn) if returned else []
        if (
            status == TransactionStatus.IDLE
            and conn.autocommit
            and current
            and not resets
            and not cursors
            and not conn.pgconn.pipeline_status
        ):
            return  # the common case: nothing to reset
        if status in reset.IN_TRANSACTION and not conn.closed:
            self._usage.count(usage.ROLLBACKS)
            logger.info("rolling back a connection returned to %r", self.name)
        if await self._cleaner.clean(
            conn, deallocate=not current, reset=resets, cursors=cursors
        ):
            self._caches.cleared(conn)

    async def _vet(self, conn: AsyncConnection) -> bool:
        """True if ``conn`` may be handed out; if not, it is discarded."""
        try:
            alive = await ais_alive(conn)
        except BaseException:
            await self._replace(conn)  # cancelled mid-probe: state unknown
            raise
        if not alive:
            await self._replace(conn)
            return False
        if expired(conn):
            # psycopg_pool closes it when given back, and opens a replacement.
            await super().putconn(conn)
            return False
        return True

    async def _replace(self, conn: AsyncConnection) -> None:
        """Discard a dead connection; psycopg_pool opens a replacement."""
        self._usage.count(usage.REPLACED)
        logger.info("replacing a dead connection of pool %r", self.name)
        await conn.close()
        await super().putconn(conn)

    async def _next_live(self, deadline: float) -> AsyncConnection:
        """psycopg_pool's next connection that passes ``_vet()``."""
        while True:
            # psycopg_pool refuses a timeout of 0 even with a connection ready.
            conn = await super().getconn(max(deadline - time.monotonic(), 0.001))
            if await self._vet(conn):
                return conn

    async def _each_idle(self, action: Callable[[AsyncConnection], Any] | None) -> None:
        """Take each idle connection once, vet it, ``action`` it, put it back.

        Through psycopg_pool's own getconn/putconn: no checkout is counted.
        """
        for _ in range(self.get_stats().get("pool_available", 0)):
            try:
                conn = await super().getconn(timeout=TAKE_IDLE_TIMEOUT)
            except (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed):
                return
            if await self._vet(conn):
                try:
                    if action is not None:
                        await action(conn)
                finally:
                    await super().putconn(conn)
