"""The async MySQL pool: a ``MySQLPool`` whose blocking calls run in threads.

mysqlclient has no asyncio interface; it releases the GIL while it waits for
the server, so (as Django's async ORM does) the calls run in worker threads
and the event loop awaits them. Every pool feature (sizing, liveness, FIFO
waiting, leaks, lifetimes, fork safety, stats) is the wrapped ``MySQLPool``'s
(``core``); this class adds the threads, the event loop it belongs to and
what a cancelled task leaves behind.

The threads are the pool's own, never the loop's default executor (that
``asyncio.to_thread()`` shares): at most ``max_size`` (``pool_size +
max_overflow``) run calls on checked-out connections (each runs one call at
a time), at most ``max_size`` wait in the core's checkout queue (later
checkouts wait in the loop), and at most ``max_size + 1`` stop cancelled
queries or the pool. So a thread is always free for the work each kind
needs, and no kind waits behind another.

A task cancelled while its query runs: the thread can't be interrupted, so
``KILL QUERY`` from a connection of its own stops the query on the server;
if that fails or the query doesn't end within ``KILL_GRACE``, the socket is
shut down. Only once the thread is done is the connection given back (and
closed, if its socket was shut): it never returns half-used.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .._config.options import PoolOptions
from .._conn.async_mysql import AsyncMySQLConnection
from . import forks
from .base import checkout_timeout, not_checked_out
from .mysql import MySQLPool
from .stats import PoolStats

logger = logging.getLogger("selecto_pool.pool")

T = TypeVar("T")

#: How long ``KILL QUERY`` may take (connecting included), then how long the
#: query may take to end after it: past either, the socket is shut down.
KILL_TIMEOUT = 2.0
KILL_GRACE = 2.0


def executor_for(name: str, options: PoolOptions) -> concurrent.futures.Executor:
    """The pool's threads (see the module's docstring for the bound); they
    are started on demand, and end when the pool is stopped."""
    return concurrent.futures.ThreadPoolExecutor(
        max_workers=3 * options.max_size + 1,
        thread_name_prefix=f"selecto_pool[{name}]",
    )


class AsyncMySQLPool:
    """A pool of MySQL connections for one event loop (``astart_pool(config,
    adapter="mysql")``), handing out ``AsyncMySQLConnection`` proxies."""

    def __init__(
        self,
        core: MySQLPool,
        executor: concurrent.futures.Executor,
        loop: asyncio.AbstractEventLoop,
    ):
        #: The sync pool doing the pooling (its stats, its options).
        self.core = core
        self._executor = executor
        self._loop = loop
        # Checkouts that may wait in a thread at once; the others wait here.
        self._lanes = asyncio.Semaphore(core.options.max_size)
        # Connections handed out, by id (the loop's only).
        self._handed: dict[int, AsyncMySQLConnection] = {}
        # Connections the core counts as out to this pool (any thread).
        self._lock = threading.Lock()
        self._out = 0
        self._born_in = forks.current()
        self._stopping = False
        self._stopped: concurrent.futures.Future[None] | None = None
        # Connections being given back (strong references to the tasks).
        self._giving: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(
        cls, name: str, options: PoolOptions, build: Callable[[], MySQLPool]
    ) -> AsyncMySQLPool:
        """``build()`` (connects, opens, registers) in the pool's own threads."""
        executor = executor_for(name, options)
        building = executor.submit(build)
        try:
            core = await asyncio.wrap_future(building)
        except asyncio.CancelledError:
            # Opened after all: nobody will ever stop it but us.
            building.add_done_callback(_stop_if_built)
            executor.shutdown(wait=False)
            raise
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(core, executor, asyncio.get_running_loop())

    # -- what the registry, the stats and the API read ----------------------
    @property
    def name(self) -> str:
        return self.core.name

    @property
    def options(self) -> PoolOptions:
        return self.core.options

    @property
    def closed(self) -> bool:
        return self.core.closed

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the pool belongs to."""
        return self._loop

    def stats(self) -> PoolStats:
        """The core's ``PoolStats``: counters only, no I/O, any thread."""
        return self.core.stats()

    # -- checkout and checkin ---------------------------------------------
    async def getconn(self, timeout: float | None = None) -> AsyncMySQLConnection:
        """Hand out a live connection, or raise ``CheckoutTimeout``."""
        self._check_usable()
        timeout = self.core.timeout if timeout is None else checkout_timeout(timeout)
        deadline = time.monotonic() + timeout
        if self._lanes.locked():
            try:
                with self.core.waiting_outside():
                    await asyncio.wait_for(self._lanes.acquire(), timeout)
            except asyncio.TimeoutError:
                raise self.core.timed_out(timeout) from None
        else:
            await self._lanes.acquire()  # no wait: no timer task
        try:
            # Stopped while this waited: the threads may have ended already.
            self._check_usable()
            taking = self._executor.submit(self._take, deadline)
        except BaseException:
            self._lanes.release()
            raise
        taking.add_done_callback(self._lane_freed)
        try:
            raw = await asyncio.wrap_future(taking)
        except asyncio.CancelledError:
            if not taking.cancel():
                # Handed over as the task was cancelled: back it goes.
                taking.add_done_callback(self._return_unused)
            raise
        conn = AsyncMySQLConnection(raw, self)
        self._handed[id(conn)] = conn
        return conn

    async def putconn(self, conn: AsyncMySQLConnection) -> None:
        """Take a connection back (rolled back if a transaction is open)."""
        if self._forked():
            return  # as the core's putconn(): the socket is the parent's
        self._check_loop()
        if self._handed.get(id(conn)) is not conn:
            raise not_checked_out(self.name)
        del self._handed[id(conn)]
        # A task of its own, shielded: a cancelled task still gives its
        # connection back.
        giving = self._loop.create_task(self._give_back(conn))
        self._giving.add(giving)
        giving.add_done_callback(self._giving.discard)
        await asyncio.shield(giving)

    # -- lifecycle -----------------------------------------------------------
    async def stop(self, timeout: float = 5.0) -> None:
        """Refuse new checkouts, wait up to ``timeout`` for checkins, close;
        the threads end once every connection is back.

        From another loop once the pool's own is closed: its tasks are gone,
        so the connections they held and aren't running a call on are taken
        back (else they would stay open until the process ends).
        """
        if self._forked():
            return  # as the core's close(): the sockets are the parent's
        orphaned = self._loop.is_closed()
        if not orphaned:
            self._check_loop()
        self._stopping = True
        if orphaned:
            self._reclaim_orphans()
        if self._stopped is None and not self.core.closed:
            # Submitted once: a second astop_pool() waits for the first's.
            self._stopped = self._executor.submit(self.core.stop, timeout)
        if self._stopped is not None:
            await asyncio.shield(asyncio.wrap_future(self._stopped))
        self._end_threads_if_idle()

    async def clear_prepared(self) -> int:
        """Nothing to deallocate: MySQL connections prepare nothing (as
        ``clear_cache()`` on a MySQL pool). Returns 0."""
        self._check_loop()
        return 0

    # -- what connections call (``_conn.async_mysql.Runner``) -------------
    def submit(
        self, fn: Callable[..., T], /, *args: Any
    ) -> concurrent.futures.Future[T]:
        if self._forked():
            # A forked child has none of the threads: it would wait forever.
            self.core.check_usable()  # raises PoolClosed naming the owner
        return self._executor.submit(fn, *args)

    def interrupted(
        self, conn: AsyncMySQLConnection, running: concurrent.futures.Future[Any]
    ) -> concurrent.futures.Future[None]:
        logger.info(
            "pool %r: a task was cancelled while its query ran; stopping the query",
            self.name,
        )
        return self._executor.submit(
            self._stop_query, conn.raw, conn.thread_id, running
        )

    # -- internals (in worker threads but the first two) -------------------
    def _check_loop(self) -> None:
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError(
                f"pool {self.name!r} belongs to the event loop that started it; "
                "start a pool in each event loop that uses one"
            )

    def _forked(self) -> bool:
        return self._born_in != forks.current()

    def _reclaim_orphans(self) -> None:
        for key, conn in list(self._handed.items()):
            if conn.interruption is None and not conn.busy:
                del self._handed[key]
                conn.returned = True
                self._return_soon(conn.raw)

    def _check_usable(self) -> None:
        # Before any thread: a forked child's executor has no threads left.
        self.core.check_usable()
        self._check_loop()

    async def _give_back(self, conn: AsyncMySQLConnection) -> None:
        await conn.retire()  # once its running call, if any, has ended
        if conn.interruption is not None:
            # A cancelled task's query: given back once it is stopped.
            raw = conn.raw
            conn.interruption.add_done_callback(lambda _: self._return_soon(raw))
            return
        await asyncio.wrap_future(self._return_soon(conn.raw))

    def _take(self, deadline: float) -> Any:
        # Counted before the core hands it over: a connection given back
        # meanwhile must not find the count at 0 and end the threads.
        with self._lock:
            self._out += 1
        try:
            return self.core.getconn(max(deadline - time.monotonic(), 0.0))
        except BaseException:
            self._forget_one()
            raise

    def _lane_freed(self, _: concurrent.futures.Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(self._lanes.release)

    def _return_unused(self, taking: concurrent.futures.Future[Any]) -> None:
        if not taking.cancelled() and taking.exception() is None:
            self._return_soon(taking.result())

    def _return_soon(self, raw: Any) -> concurrent.futures.Future[None]:
        return self._executor.submit(self._return, raw)

    def _return(self, raw: Any) -> None:
        try:
            self.core.putconn(raw)
        finally:
            self._forget_one()

    def _forget_one(self) -> None:
        with self._lock:
            self._out -= 1
        if self._stopping:
            self._end_threads_if_idle()

    def _end_threads_if_idle(self) -> None:
        with self._lock:
            if self._out == 0:
                self._executor.shutdown(wait=False)

    def _stop_query(
        self, raw: Any, thread_id: int, running: concurrent.futures.Future[Any]
    ) -> None:
        """Make the thread running a cancelled task's query return: KILL
        QUERY, or shut the socket down (the connection is then closed)."""
        severed = killed = False
        try:
            self.core.driver.kill_query(thread_id, KILL_TIMEOUT)
            killed = True
            concurrent.futures.wait([running], KILL_GRACE)
        except Exception as exc:
            logger.warning(
                "pool %r: KILL QUERY failed (%s: %s): closing the connection instead",
                self.name,
                type(exc).__name__,
                exc,
            )
        if not running.done():
            severed = True
            self.core.driver.sever(raw)
            if concurrent.futures.wait([running], KILL_GRACE).not_done:
                logger.error(
                    "pool %r: a cancelled query's thread is still blocked; "
                    "its connection is given back when it returns",
                    self.name,
                )
                concurrent.futures.wait([running])
        if severed:
            self.core.driver.close(raw)  # putconn() counts it lost, replaces it
        if not killed:
            # The server runs a query to its end though its client has gone:
            # one more KILL (what failed the first, e.g. load, may be over).
            with contextlib.suppress(Exception):
                self.core.driver.kill_query(thread_id, KILL_TIMEOUT)


def _stop_if_built(building: concurrent.futures.Future[MySQLPool]) -> None:
    if not building.cancelled() and building.exception() is None:
        building.result().stop(0)
