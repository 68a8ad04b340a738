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
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
import psycopg_pool
from psycopg.pq import TransactionStatus

from .. import _compat
from .._config.options import MAXIMA, PoolOptions
from .._conn import reset, statements
from .._conn.liveness import expired, is_alive
from .._conn.outages import OutageLog, connection_class_for
from ..errors import CheckoutTimeout, PoolClosed
from . import forks, usage
from .leaks import LeakDetector
from .maintenance import Maintainer
from .stats import PoolStats, exhausted_message, pool_stats_of
from .usage import Usage

logger = logging.getLogger("selecto_pool.pool")

Connection = psycopg.Connection[Any]

# Detect a vanished peer (no FIN) within about a minute instead of hours.
TCP_KEEPALIVE_DEFAULTS = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}

_VANISHED_BEFORE_STOP = 3
# The longest wait at checkout or close: longer ones overflow threading's.
_LONGEST_CHECKOUT = MAXIMA["checkout_timeout"]
# How long a background look at idle connections waits to take one before
# giving up (the pool got busy: whoever took the connection checks it anyway).
_TAKE_IDLE_TIMEOUT = 0.01


def _wait_at_most(timeout: float) -> float:
    return min(timeout, _LONGEST_CHECKOUT) if timeout >= 0 else 0.0  # NaN: 0


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
        forks.watch()
        self._born_in = forks.current()
        self.started_at = time.time()
        self._extra_configure = configure
        connection_class, self._outage = connection_class_for(
            name, options.login_retry_max
        )
        self._close_callbacks: list[Callable[[], None]] = []
        # Set when prepared statements turn out not to survive (see
        # _statements): connections are handed out with preparing off.
        self._preparing_stopped = False
        self._vanished = 0
        self._usage = Usage()
        self._draining = False
        # Guards the statement bookkeeping below, off the hot path
        # (psycopg_pool's own lock is self._lock).
        self._bookkeeping = threading.Lock()
        # Connections remember the clear_prepared() generation they are at.
        self._generation = 0
        self._conn_generation: weakref.WeakKeyDictionary[Connection, int] = (
            weakref.WeakKeyDictionary()
        )
        super().__init__(
            conninfo,
            connection_class=connection_class,
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
        # Weak callbacks: an abandoned pool can still be garbage-collected.
        self._maintainer = Maintainer(
            name,
            options.health_check_interval,
            self._leaks,
            sweep=weakref.WeakMethod(self.sweep_idle),
            run_task=weakref.WeakMethod(self.run_task),
            retry_delay=self._outage.retry_delay,
        )

    # -- checkout and checkin ---------------------------------------------
    def getconn(self, timeout: float | None = None) -> Connection:
        """Hand out a live connection, or raise ``CheckoutTimeout``."""
        if self._born_in != forks.current() or self._draining:
            self._refuse_if_unusable()
        if timeout is None:
            timeout = self.timeout
        elif not timeout <= _LONGEST_CHECKOUT:  # NaN too
            raise ValueError(f"checkout timeout {timeout!r}: at most 86400 s")
        started = time.monotonic()
        self._usage.start_waiting()
        try:
            conn = self._next_live(started + timeout)
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
        if self._preparing_stopped:
            conn.prepare_threshold = None
        self._usage.checked_out((time.monotonic() - started) * 1000.0)
        if self._leaks is not None:
            self._leaks.checked_out(conn)
        return conn

    def putconn(self, conn: Connection) -> None:
        """Take a connection back, clean: no transaction, autocommit on."""
        if self._born_in != forks.current():
            # Inherited across fork(): the socket is the parent's, leave it be.
            return
        if _compat.pool_of(conn) is not self:
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
            self._usage.checked_in()

    # -- lifecycle -----------------------------------------------------------
    def stop(self, timeout: float = 5.0) -> None:
        """Refuse new checkouts, wait up to ``timeout`` for checkins, close."""
        deadline = time.monotonic() + _wait_at_most(timeout)
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

    def clear_prepared(self) -> int:
        """Deallocate prepared statements on every connection of the pool.

        Idle connections are cleared now; checked-out ones when returned.
        Returns how many connections that is.
        """
        with self._bookkeeping:
            self._generation += 1
        self._each_idle(self._clean)
        return int(self.get_stats().get("pool_size", 0))

    def sweep_idle(self) -> None:
        """Look at each idle connection once: replace the dead, retire the expired.

        Run by the maintenance thread every ``health_check_interval``.
        """
        self._each_idle(lambda conn: None)

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        if not wait and not self.closed:
            # Already open: Django calls open() before every checkout; skip
            # psycopg_pool's lock for it.
            return
        _compat.check()
        super().open(wait=wait, timeout=timeout)
        self._maintainer.start()

    def close(self, timeout: float = 5.0) -> None:
        if self._born_in != forks.current():
            # A pool inherited across fork(): its sockets are the parent's.
            return
        for callback in self._close_callbacks:
            callback()
        timeout = _wait_at_most(timeout)
        self._maintainer.stop(timeout)
        super().close(timeout)

    def schedule_task(self, task: Any, delay: float) -> None:
        # psycopg_pool schedules retries of failed connection attempts, with
        # a backoff of seconds to minutes, and its periodic shrinking. The
        # retries go to the maintenance thread's reconnect probe instead.
        if isinstance(task, _compat.AddConnection):
            self._maintainer.park(task)
        else:
            super().schedule_task(task, delay)

    def statements_vanished(self) -> None:
        """A connection lost prepared statements it did not deallocate.

        Once may be someone's DEALLOCATE; a few times means they don't survive
        (a transaction-mode PgBouncer): connections are handed out with
        preparing off from then on.
        """
        with self._bookkeeping:
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

    @property
    def outage(self) -> OutageLog:
        """Failed connection attempts and the backoff: whoever else connects
        with the pool's credentials uses ``connection_class`` (it records and
        paces attempts) and waits ``outage.retry_delay()`` between them."""
        return self._outage

    def add_close_callback(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the pool closes (e.g. stop its responder)."""
        self._close_callbacks.append(callback)

    # -- introspection ----------------------------------------------------
    def stats(self) -> PoolStats:
        return pool_stats_of(
            self.name,
            self.options,
            self.get_stats(),
            self._usage.snapshot(),
            self.cache_stats(),
            leaks=self._leaks.leaks if self._leaks is not None else 0,
            started_at=self.started_at,
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
            statements.install(
                conn,
                cache_size=self.options.prepared_statement_cache_size,
                cache_bytes=self.options.prepared_statement_cache_mib * 2**20,
                threshold=self.options.prepare_threshold or 0,
                on_vanished=self.statements_vanished,
            )

    def cache_stats(self) -> list[dict[str, int]]:
        """The statement cache of each open connection (backend pid included)."""
        caches = []
        for conn in list(self._conn_generation.keys()):
            cache = statements.cache_of(conn)
            if cache is not None and not conn.closed:
                caches.append(
                    {"backend_pid": conn.info.backend_pid, **cache.snapshot()}
                )
        return caches

    def _refuse_if_unusable(self) -> None:
        if self._born_in != forks.current():
            raise PoolClosed(
                f"pool {self.name!r} belongs to process {self.owner_pid}; a forked "
                "process gets its own pool from get_pool() or the ORM"
            )
        if self._draining:
            raise PoolClosed(f"pool {self.name!r} is stopping")

    def _clean(self, conn: Connection) -> None:
        status = conn.pgconn.transaction_status
        generation = self._conn_generation.get(conn, -1)
        if (
            status == TransactionStatus.IDLE
            and conn.autocommit
            and generation == self._generation
        ):
            return  # the common case: nothing to reset
        if status in reset.IN_TRANSACTION and not conn.closed:
            self._usage.count(usage.ROLLBACKS)
            logger.info("rolling back a connection returned to %r", self.name)
        deallocate = generation < self._generation
        if reset.clean(conn, deallocate=deallocate, pool_name=self.name):
            self._conn_generation[conn] = self._generation

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
        self._usage.count(usage.REPLACED)
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

    def _each_idle(self, action: Callable[[Connection], object]) -> None:
        """Take each idle connection once, vet it, ``action`` it, put it back.

        Through psycopg_pool's own getconn/putconn: no checkout is counted.
        """
        for _ in range(self.get_stats().get("pool_available", 0)):
            try:
                conn = super().getconn(timeout=_TAKE_IDLE_TIMEOUT)
            except (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed):
                return
            if self._vet(conn):
                action(conn)
                super().putconn(conn)
