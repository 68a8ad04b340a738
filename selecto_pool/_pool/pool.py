"""The pool: psycopg_pool's ``ConnectionPool`` plus what Django users need.

psycopg_pool does the hard parts (sizing, growing and shrinking, reconnecting
with backoff, ``max_lifetime``/``max_idle``, rolling back dirty returns). This
subclass adds only what it lacks:

* a liveness check at checkout that costs no round trip (``_conn.liveness``), and
  skips psycopg_pool's retry backoff, so that after a server restart the dead
  idle connections are discarded in microseconds instead of seconds;
* errors that say which pool, how full it is and how many clients wait;
* connections returned clean (``_conn.reset``): rolled back, in autocommit,
  reset if asked, and closed when they can't be cleaned in time;
* a draining ``stop()`` and a prepared-statement ``clear_prepared()``;
* fork safety: a pool never touches sockets it inherited from its parent;
* a maintenance thread (``maintenance``): background health sweeps,
  leak detection, and reconnection within half a second of a server's return;
* ``max_lifetime`` enforced at checkout too, not only on return.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
import psycopg_pool
from psycopg.pq import TransactionStatus

from .. import _compat
from .._config.options import PoolOptions
from .._conn import reset
from .._conn.liveness import expired, is_alive
from .._conn.outages import OutageLog, connection_class_for
from ..errors import CheckoutTimeout, PoolClosed
from . import forks, usage
from .base import PoolBase, checkout_timeout, not_checked_out, wait_at_most
from .psycopg_common import TAKE_IDLE_TIMEOUT, TCP_KEEPALIVE_DEFAULTS, pool_arguments
from .statement_caches import StatementCaches
from .stats import PoolStats, exhausted_message, snapshot

logger = logging.getLogger("selecto_pool.pool")

Connection = psycopg.Connection[Any]


class SelectoPool(psycopg_pool.ConnectionPool[Connection], PoolBase):
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
        connection_class, self._outage = connection_class_for(
            name, options.login_retry_max
        )
        self._init_base(
            name,
            options,
            target,
            run_task=weakref.WeakMethod(self.run_task),
            retry_delay=self._outage.retry_delay,
        )
        self._extra_configure = configure
        # Cleaning a returned connection may take as long as opening one.
        self._cleaner = reset.Cleaner(
            name,
            reset=options.reset,
            reconfigure=configure,
            timeout=options.connection_timeout,
        )
        self._caches = StatementCaches(name, options)
        super().__init__(
            conninfo,
            connection_class=connection_class,
            kwargs={**TCP_KEEPALIVE_DEFAULTS, **kwargs},
            open=False,
            configure=self._configure_new,
            check=check,
            name=name,
            **pool_arguments(options),
        )

    # -- checkout and checkin ---------------------------------------------
    def getconn(self, timeout: float | None = None) -> Connection:
        """Hand out a live connection, or raise ``CheckoutTimeout``."""
        if self._born_in != forks.current() or self._draining:
            self._refuse_if_unusable()
        timeout = self.timeout if timeout is None else checkout_timeout(timeout)
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
        if self._caches.preparing_stopped:
            conn.prepare_threshold = None
        self._usage.checked_out((time.monotonic() - started) * 1000.0)
        if self._leaks is not None:
            self._leaks.checked_out(conn)
        return conn

    def getconn_if_idle(self) -> Connection | None:
        """An idle live connection now, or None: never waits, never grows the pool."""
        if self._born_in != forks.current() or self._draining:
            self._refuse_if_unusable()
        while True:
            conn: Connection | None = _compat.take_ready(self)
            if conn is None or self._vet(conn):
                break
        if conn is not None:
            self._usage.start_waiting()
            self._usage.checked_out(None)
        return conn

    def putconn(self, conn: Connection, *, reset: bool = True) -> None:
        """Take a connection back, clean: no transaction, autocommit on (and
        reset, unless ``reset=False``: /health/db's SELECT 1 changed nothing)."""
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
                    self._clean(conn, returned=True, with_reset=reset)
            except BaseException:
                # Interrupted (KeyboardInterrupt...): closed, and given back all
                # the same, or psycopg_pool counts it as checked out for good.
                conn.close()
                super().putconn(conn)
                raise
            super().putconn(conn)
        finally:
            self._usage.checked_in()

    # -- lifecycle -----------------------------------------------------------
    def clear_prepared(self) -> int:
        """Deallocate prepared statements on every connection of the pool.

        Idle connections are cleared now; checked-out ones when returned.
        Returns how many connections that is.
        """
        self._caches.clear_all()
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
        if self.closed:
            self._refuse_reopening()
        super().open(wait=wait, timeout=timeout)
        self._opened_once = True
        self._maintainer.start()

    def close(self, timeout: float = 5.0) -> None:
        if self._born_in != forks.current():
            # A pool inherited across fork(): its sockets are the parent's.
            return
        for callback in self._close_callbacks:
            callback()
        timeout = wait_at_most(timeout)
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
        """A connection lost prepared statements it did not deallocate."""
        self._caches.vanished()

    @property
    def outage(self) -> OutageLog:
        """Failed connection attempts and the backoff: whoever else connects
        with the pool's credentials uses ``connection_class`` (it records and
        paces attempts) and waits ``outage.retry_delay()`` between them."""
        return self._outage

    def track_cursor(self, conn: Connection, cursor: Any) -> None:
        """Close the named ``cursor`` when ``conn`` is returned, if still open."""
        self._cleaner.track_cursor(conn, cursor)

    # -- introspection ----------------------------------------------------
    def stats(self) -> PoolStats:
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

    # -- internals -----------------------------------------------------------
    def _configure_new(self, conn: Connection) -> None:
        # Off unless the cache is on (psycopg's default would prepare), and
        # off while Django configures the session: those run once.
        conn.prepare_threshold = None
        if self._extra_configure:
            self._extra_configure(conn)
        self._caches.install(conn)
        self._cleaner.configured(conn)

    def cache_stats(self) -> list[dict[str, int]]:
        """The statement cache of each open connection (backend pid included)."""
        return self._caches.snapshot()

    def _clean(
        self, conn: Connection, *, returned: bool = False, with_reset: bool = True
    ) -> None:
        """Clean ``conn`` or close it; ``returned`` by a borrower: reset it too."""
        status = conn.pgconn.transaction_status
        if status == TransactionStatus.IDLE and not conn.pgconn.pipeline_status:
            self._cleaner.restore_client_state(conn)  # else in clean(), or closed
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
        if self._cleaner.clean(
            conn, deallocate=not current, reset=resets, cursors=cursors
        ):
            self._caches.cleared(conn)

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
                conn = super().getconn(timeout=TAKE_IDLE_TIMEOUT)
            except (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed):
                return
            if self._vet(conn):
                action(conn)
                super().putconn(conn)
