"""The pool: psycopg_pool's ``ConnectionPool`` plus what Django users need.

psycopg_pool does the hard parts (sizing, growing and shrinking, reconnecting
with backoff, ``max_lifetime``/``max_idle``, rolling back dirty returns). This
subclass adds only what it lacks:

* a liveness check at checkout that costs no round trip (see ``_health``), and
  skips psycopg_pool's retry backoff, so that after a server restart the dead
  idle connections are discarded in microseconds instead of seconds;
* errors that say which pool, how full it is and how many clients wait;
* connections returned in autocommit mode, so the next user starts clean;
* a draining ``stop()`` and a prepared-statement ``clear_prepared()``;
* fork safety: a pool never touches sockets it inherited from its parent;
* a maintenance thread (see ``_maintenance``): background health sweeps,
  leak detection, and reconnection within half a second of a server's return;
* ``max_lifetime`` enforced at checkout too, not only on return.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
import psycopg_pool
from psycopg.pq import TransactionStatus

from . import _statements
from ._connections import connection_class_for
from ._health import expired, is_alive
from ._leaks import LeakDetector
from ._maintenance import Maintainer
from ._options import PoolOptions
from ._stats import PoolStats, cache_totals, percentile
from .errors import CheckoutTimeout, PoolClosed

logger = logging.getLogger("selecto_pool")

Connection = psycopg.Connection[Any]

# Detect a vanished peer (no FIN) within about a minute instead of hours.
TCP_KEEPALIVE_DEFAULTS = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}

_CHECKOUTS = "checkouts"
_TIMEOUTS = "checkout_timeouts"
_REPLACED = "connections_replaced"
_ROLLBACKS = "rollbacks_on_return"
_VANISHED_BEFORE_STOP = 3

# Incremented in every forked child. Comparing it is the hot path's "is this
# pool from this process?" (os.getpid() is a system call on each checkout).
_forks = [0]
_fork_watch_installed = False


def _forked() -> None:
    _forks[0] += 1


def _watch_forks() -> None:
    """Registered with the first pool rather than at import."""
    global _fork_watch_installed
    if not _fork_watch_installed:
        os.register_at_fork(after_in_child=_forked)
        _fork_watch_installed = True


# psycopg_pool schedules a retry of a failed connection attempt as one of
# these; the pool parks them for its reconnect probe (see ``_maintenance``).
_ADD_CONNECTION = getattr(psycopg_pool.pool, "AddConnection", None)


class SelectoPool(psycopg_pool.ConnectionPool[Connection]):
    """A process-local pool of psycopg connections to one database."""

    def __init__(
        self,
        *,
        name: str,
        options: PoolOptions,
        kwargs: Mapping[str, Any],
        conninfo: str = "",
        configure: Callable[[Connection], Any] | None = None,
        check: Callable[[Connection], Any] | None = None,
        target: Any = None,
    ):
        self.options = options
        #: What the pool connects to; the registry replaces a pool whose
        #: target no longer matches the settings (e.g. the test database).
        self.target = target
        self.owner_pid = os.getpid()
        _watch_forks()
        self._born_in = _forks[0]
        self.started_at = time.time()
        self._extra_configure = configure
        self._close_callbacks: list[Callable[[], None]] = []
        # Set when prepared statements turn out not to survive (see
        # _statements): connections are handed out with preparing off.
        self._preparing_stopped = False
        self._vanished = 0
        # Guards the counters below: a plain lock, taken twice per checkout
        # and once per checkin. stop() waits on the condition for checkins,
        # which putconn() signals only while the pool drains.
        self._usage = threading.Lock()
        self._returned = threading.Condition(self._usage)
        self._in_use = 0
        # Clients inside psycopg_pool's getconn(), i.e. waiting (psycopg_pool's
        # own count keeps timed-out clients until a connection comes back).
        self._waiting_clients = 0
        # Recent checkout waits in ms, for the p50/p99 that operators watch.
        self._wait_samples: deque[float] = deque(maxlen=1000)
        self._draining = False
        self._counts = dict.fromkeys((_CHECKOUTS, _TIMEOUTS, _REPLACED, _ROLLBACKS), 0)
        # Connections remember the clear_prepared() generation they are at.
        self._generation = 0
        self._conn_generation: weakref.WeakKeyDictionary[Connection, int] = (
            weakref.WeakKeyDictionary()
        )
        super().__init__(
            conninfo,
            connection_class=connection_class_for(name),
            kwargs={**TCP_KEEPALIVE_DEFAULTS, **kwargs},
            min_size=options.pool_size,
            max_size=options.max_size,
            open=False,
            configure=self._configure_new,
            check=check,
            name=name,
            timeout=options.checkout_timeout,
            max_lifetime=options.max_lifetime,
            max_idle=options.max_idle,
        )
        # Nothing is recorded at checkout unless leak detection is on.
        self._leaks = (
            LeakDetector(name, options.leak_detection_threshold)
            if options.leak_detection_threshold
            else None
        )
        self._maintainer = Maintainer(self, options.health_check_interval, self._leaks)

    # -- checkout and checkin ---------------------------------------------
    def getconn(self, timeout: float | None = None) -> Connection:
        """Hand out a live connection, or raise ``CheckoutTimeout``."""
        if self._born_in != _forks[0] or self._draining:
            self._refuse_if_unusable()
        if timeout is None:
            timeout = self.timeout
        started = time.monotonic()
        with self._usage:
            self._waiting_clients += 1
        try:
            conn = self._next_live(started + timeout)
        except psycopg_pool.PoolTimeout:
            self._stop_waiting(_TIMEOUTS)
            message = self._exhausted_message(timeout)
            logger.warning("%s", message)
            raise CheckoutTimeout(message) from None
        except psycopg_pool.PoolClosed:
            self._stop_waiting()
            raise PoolClosed(f"pool {self.name!r} is closed") from None
        except BaseException:
            self._stop_waiting()
            raise
        if self._preparing_stopped:
            conn.prepare_threshold = None
        waited_ms = (time.monotonic() - started) * 1000.0
        with self._usage:
            self._waiting_clients -= 1
            self._in_use += 1
            self._counts[_CHECKOUTS] += 1
            self._wait_samples.append(waited_ms)
        if self._leaks is not None:
            self._leaks.checked_out(conn)
        return conn

    def putconn(self, conn: Connection) -> None:
        """Take a connection back, clean: no transaction, autocommit on."""
        if self._born_in != _forks[0]:
            # Inherited across fork(): the socket is the parent's, leave it be.
            return
        if getattr(conn, "_pool", None) is not self:
            # Before any side effect: a connection returned twice, or to the
            # wrong pool, may be in someone else's hands now.
            raise ValueError(
                f"can't return a connection to pool {self.name!r}: it is not "
                "checked out from it (returned twice, or to the wrong pool?)"
            )
        if self._leaks is not None:
            self._leaks.returned(conn)
        try:
            self._clean(conn)
            super().putconn(conn)
        finally:
            with self._usage:
                self._in_use = max(self._in_use - 1, 0)
                if self._draining:
                    self._returned.notify_all()

    # -- lifecycle -----------------------------------------------------------
    def stop(self, timeout: float = 5.0) -> None:
        """Refuse new checkouts, wait up to ``timeout`` for checkins, close."""
        deadline = time.monotonic() + timeout
        with self._returned:
            self._draining = True
            while self._in_use and (remaining := deadline - time.monotonic()) > 0:
                self._returned.wait(remaining)
            still_out = self._in_use
        if still_out:
            logger.warning(
                "stopping pool %r with %d connection(s) still checked out; "
                "they are closed when returned",
                self.name,
                still_out,
            )
        self.close(timeout=max(deadline - time.monotonic(), 0.1))

    def clear_prepared(self) -> int:
        """Deallocate prepared statements on every connection of the pool.

        Idle connections are cleared now; checked-out ones when returned.
        Returns how many connections that is.
        """
        with self._usage:
            self._generation += 1
        stats = self.get_stats()
        for _ in range(stats.get(self._POOL_AVAILABLE, 0)):
            try:
                conn = self.getconn(timeout=0.05)
            except CheckoutTimeout:
                break
            self.putconn(conn)
        return int(stats.get(self._POOL_SIZE, 0))

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        if not wait and not self.closed:
            # Already open: Django calls open() before every checkout; skip
            # psycopg_pool's lock for it.
            return
        super().open(wait=wait, timeout=timeout)
        self._maintainer.start()

    def close(self, timeout: float = 5.0) -> None:
        if self._born_in != _forks[0]:
            # A pool inherited across fork(): its sockets are the parent's.
            return
        for callback in self._close_callbacks:
            callback()
        self._maintainer.stop(timeout)
        super().close(timeout)

    def schedule_task(self, task: Any, delay: float) -> None:
        # psycopg_pool schedules retries of failed connection attempts, with
        # a backoff of seconds to minutes, and its periodic shrinking. The
        # retries go to the maintenance thread's reconnect probe instead.
        if _ADD_CONNECTION is not None and isinstance(task, _ADD_CONNECTION):
            self._maintainer.park(task)
        else:
            super().schedule_task(task, delay)

    def statements_vanished(self) -> None:
        """A connection lost prepared statements it did not deallocate.

        Once may be someone's DEALLOCATE; a few times means they don't survive
        (a transaction-mode PgBouncer): connections are handed out with
        preparing off from then on.
        """
        with self._usage:
            self._vanished += 1
            stop = self._vanished == _VANISHED_BEFORE_STOP
        if stop:
            self._preparing_stopped = True
            logger.warning(
                "pool %r stops preparing statements: prepared statements vanish "
                "from the server (a PgBouncer in transaction mode? set the pool "
                "option pgbouncer='transaction')",
                self.name,
            )

    def add_close_callback(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the pool closes (e.g. stop its responder)."""
        self._close_callbacks.append(callback)

    # -- introspection ----------------------------------------------------
    @property
    def in_use(self) -> int:
        return self._in_use

    def stats(self) -> PoolStats:
        raw = self.get_stats()
        with self._usage:
            counts = dict(self._counts)
            in_use = self._in_use
            waiting = self._waiting_clients
            waits = list(self._wait_samples)
        connections = raw.get(self._POOL_SIZE, 0)
        return PoolStats(
            name=self.name,
            pool_size=self.options.pool_size,
            max_overflow=self.options.max_overflow,
            connections=connections,
            idle=raw.get(self._POOL_AVAILABLE, 0),
            in_use=in_use,
            overflow=max(connections - self.options.pool_size, 0),
            waiting=waiting,
            checkouts=counts[_CHECKOUTS],
            checkout_timeouts=counts[_TIMEOUTS],
            connection_errors=raw.get(self._CONNECTIONS_ERRORS, 0),
            connections_replaced=counts[_REPLACED] + raw.get(self._CONNECTIONS_LOST, 0),
            rollbacks_on_return=counts[_ROLLBACKS],
            connections_opened=raw.get(self._CONNECTIONS_NUM, 0)
            - raw.get(self._CONNECTIONS_ERRORS, 0),
            checkout_wait_p50_ms=percentile(waits, 50),
            checkout_wait_p99_ms=percentile(waits, 99),
            started_at=self.started_at,
            **cache_totals(self.cache_stats()),
            leaks=self._leaks.leaks if self._leaks is not None else 0,
            closed=self.closed,
        )

    # -- internals -----------------------------------------------------------
    def _configure_new(self, conn: Connection) -> None:
        self._conn_generation[conn] = self._generation
        # Off unless the cache is on (psycopg's default would prepare), and
        # off while Django configures the session: those run once.
        conn.prepare_threshold = None
        if self._extra_configure:
            self._extra_configure(conn)
        if self.options.prepares and not self._preparing_stopped:
            _statements.install(
                conn,
                cache_size=self.options.prepared_statement_cache_size,
                threshold=self.options.prepare_threshold or 0,
            )

    def cache_stats(self) -> list[dict[str, int]]:
        """The statement cache of each open connection (backend pid included)."""
        caches = []
        for conn in list(self._conn_generation.keys()):
            cache = _statements.cache_of(conn)
            if cache is not None and not conn.closed:
                caches.append(
                    {"backend_pid": conn.info.backend_pid, **cache.snapshot()}
                )
        return caches

    def _refuse_if_unusable(self) -> None:
        if self._born_in != _forks[0]:
            raise PoolClosed(
                f"pool {self.name!r} belongs to process {self.owner_pid}; a forked "
                "process gets its own pool from get_pool() or the ORM"
            )
        if self._draining:
            raise PoolClosed(f"pool {self.name!r} is stopping")

    def _clean(self, conn: Connection) -> None:
        status = conn.pgconn.transaction_status
        if (
            status == TransactionStatus.IDLE
            and conn.autocommit
            and self._conn_generation.get(conn, -1) == self._generation
        ):
            return  # the common case: nothing to reset
        if conn.closed:
            return
        if status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            self._count(_ROLLBACKS)
            logger.info("rolling back a connection returned to %r", self.name)
        try:
            if status != TransactionStatus.IDLE:
                conn.rollback()
            if not conn.autocommit:
                conn.autocommit = True
            if self._conn_generation.get(conn, -1) < self._generation:
                conn.execute("DEALLOCATE ALL")
                self._conn_generation[conn] = self._generation
        except psycopg.Error as exc:
            # psycopg_pool discards and replaces a closed connection.
            logger.warning(
                "discarding a connection of %r that could not be reset: %s",
                self.name,
                type(exc).__name__,
            )
            conn.close()

    def _vet(self, conn: Connection) -> bool:
        """True if ``conn`` may be handed out; if not, it is discarded."""
        if not is_alive(conn):
            self._replace(conn)
            return False
        if expired(conn):
            # psycopg_pool closes it when given back, and opens a replacement.
            super().putconn(conn)
            return False
        return True

    def _replace(self, conn: Connection) -> None:
        """Discard a dead connection; psycopg_pool opens a replacement."""
        self._count(_REPLACED)
        logger.info("replacing a dead connection of pool %r", self.name)
        conn.close()
        super().putconn(conn)

    def _next_live(self, deadline: float) -> Connection:
        """psycopg_pool's next connection that passes ``_vet()``."""
        while True:
            # psycopg_pool refuses a timeout of 0 even with a connection ready.
            conn = super().getconn(max(deadline - time.monotonic(), 0.001))
            if self._vet(conn):
                return conn

    def _stop_waiting(self, outcome: str | None = None) -> None:
        """A client leaves getconn() without a connection (``outcome`` counted)."""
        with self._usage:
            self._waiting_clients -= 1
            if outcome is not None:
                self._counts[outcome] += 1

    def _count(self, key: str) -> None:
        with self._usage:
            self._counts[key] += 1

    def _exhausted_message(self, timeout: float) -> str:
        stats = self.stats()
        message = (
            f"no connection of pool {self.name!r} became free within {timeout:.2f} s "
            f"(checkout_timeout): {stats.in_use} in use of pool_size "
            f"{stats.pool_size} + max_overflow {stats.max_overflow}, "
            f"{stats.waiting} other client(s) waiting"
        )
        outage = getattr(self.connection_class, "selecto_outage", None)
        opening = stats.connections - stats.idle - stats.in_use
        if outage is not None and outage.failures:
            message += (
                f"; the last {outage.failures} attempt(s) to connect failed, for "
                f"{time.monotonic() - outage.since:.1f} s ({outage.last_error}): "
                "is the database server reachable?"
            )
        elif opening > 0 and stats.idle == 0:
            message += (
                f"; {opening} connection(s) still being opened: is the database "
                "server slow or unreachable?"
            )
        return message
