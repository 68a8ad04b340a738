"""The prepared-statement caches of one pool's connections, kept together.

The same for the sync and the async pool: nothing here does I/O.

Each connection has its own cache (``_conn.statements``); the pool needs to
clear them all (``clearcache``, ``migrate``), to add up their counters, and
to stop preparing once statements turn out not to survive on the server (a
transaction-mode PgBouncer). Clearing is lazy: a generation number is bumped,
and each connection is cleared when the pool next has it in hand (idle ones
at once, busy ones when returned).
"""

from __future__ import annotations

import logging
import threading
import weakref

from .._config.options import PoolOptions
from .._conn import statements
from .._conn.statements import AnyConnection

logger = logging.getLogger("selecto_pool.statements")

# Vanished statements before preparing stops: once may be someone's
# DEALLOCATE; a few times means they don't survive.
_VANISHED_BEFORE_STOP = 3


class StatementCaches:
    """The caches of one pool's connections, and when each was last cleared."""

    def __init__(self, pool_name: str, options: PoolOptions):
        self._pool_name = pool_name
        self._options = options
        #: Set when prepared statements turn out not to survive: connections
        #: are handed out (and opened) with preparing off from then on.
        self.preparing_stopped = False
        self._vanished = 0
        self._lock = threading.Lock()
        self._generation = 0
        self._conn_generation: weakref.WeakKeyDictionary[AnyConnection, int] = (
            weakref.WeakKeyDictionary()
        )

    def install(self, conn: AnyConnection) -> None:
        """Give a new connection its cache (when the pool prepares at all)."""
        self._conn_generation[conn] = self._generation
        if self._options.prepares and not self.preparing_stopped:
            statements.install(
                conn,
                cache_size=self._options.prepared_statement_cache_size,
                cache_bytes=self._options.prepared_statement_cache_mib * 2**20,
                threshold=self._options.prepare_threshold or 0,
                on_vanished=self.vanished,
            )

    def clear_all(self) -> None:
        """Every connection deallocates its statements when next in hand."""
        with self._lock:
            self._generation += 1

    def is_current(self, conn: AnyConnection) -> bool:
        """Whether ``conn`` was cleared since the last ``clear_all()``."""
        return self._conn_generation.get(conn, -1) == self._generation

    def cleared(self, conn: AnyConnection) -> None:
        self._conn_generation[conn] = self._generation

    def vanished(self) -> None:
        """A connection lost prepared statements it did not deallocate."""
        with self._lock:
            self._vanished += 1
            stop = self._vanished == _VANISHED_BEFORE_STOP
        if stop:
            self.preparing_stopped = True
            logger.warning(
                "pool %r stops preparing statements: prepared statements vanish "
                "from the server (a PgBouncer in transaction mode? set the pool "
                "option pgbouncer='transaction')",
                self._pool_name,
            )

    def connections(self) -> list[AnyConnection]:
        """Every connection of the pool still referenced (open or not)."""
        return list(self._conn_generation.keys())

    def snapshot(self) -> list[dict[str, int]]:
        """The counters of each open connection's cache (backend pid included)."""
        caches = []
        for conn in self.connections():
            cache = statements.cache_of(conn)
            if cache is not None and not conn.closed:
                caches.append(
                    {"backend_pid": conn.info.backend_pid, **cache.snapshot()}
                )
        return caches
