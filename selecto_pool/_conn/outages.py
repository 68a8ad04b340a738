"""The connection class a pool opens, which reports failures and recoveries.

psycopg_pool retries failed connects in the background and logs each attempt
to ``psycopg.pool``; operators watch ``selecto_pool``. A per-pool subclass of
``psycopg.Connection`` hooks ``connect()`` (the one call psycopg_pool makes)
to log the first failure of an outage, and the recovery, once each.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg

logger = logging.getLogger("selecto_pool.pool")


class OutageLog:
    """Counts consecutive connect failures of one pool; logs edges, not floods."""

    def __init__(self, pool_name: str):
        self.pool_name = pool_name
        self.failures = 0
        #: When the current run of failures began (monotonic), and its last
        #: error's first line, for the pool's CheckoutTimeout message.
        self.since = 0.0
        self.last_error = ""
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            first = self.failures == 1
            if first:
                self.since = time.monotonic()
            self.last_error = str(exc).strip().partition("\n")[0]
        # psycopg's messages carry host and user, never the password.
        log = logger.warning if first else logger.debug
        log("pool %r cannot connect: %s", self.pool_name, exc)

    def succeeded(self) -> None:
        with self._lock:
            failures, self.failures = self.failures, 0
        if failures:
            logger.warning(
                "pool %r connected again after %d failed attempt(s)",
                self.pool_name,
                failures,
            )


def connection_class_for(
    pool_name: str,
) -> tuple[type[psycopg.Connection[Any]], OutageLog]:
    """A ``psycopg.Connection`` subclass whose ``connect()`` logs for the pool,
    and the log it keeps (read by the pool's timeout messages)."""
    outage = OutageLog(pool_name)

    class PooledConnection(psycopg.Connection[Any]):
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
            try:
                conn = super().connect(conninfo, **kwargs)
            except psycopg.Error as exc:
                outage.failed(exc)
                raise
            outage.succeeded()
            return conn

    return PooledConnection, outage
