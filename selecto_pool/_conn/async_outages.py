"""The async connection class a pool opens: ``outages`` for ``AsyncConnection``.

Same log and same pacing as the sync pool's connection class (see
``outages``): the first failure of an outage and the recovery logged once
each, failed logins backed off, the password masked in the error. Only
``connect()`` differs, being a coroutine.
"""

from __future__ import annotations

from typing import Any

import psycopg

from .outages import LOGIN_RETRY_MAX, OutageLog


def async_connection_class_for(
    pool_name: str, login_retry_max: float = LOGIN_RETRY_MAX
) -> tuple[type[psycopg.AsyncConnection[Any]], OutageLog]:
    """An ``AsyncConnection`` subclass whose ``connect()`` logs and paces for
    the pool, and the log it keeps (read by the pool's timeout messages)."""
    outage = OutageLog(pool_name, login_retry_max)

    class AsyncPooledConnection(psycopg.AsyncConnection[Any]):
        @classmethod
        async def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
            wait = outage.claim()
            if wait > 0:
                raise outage.held_back(wait)
            try:
                conn = await super().connect(conninfo, **kwargs)
            except psycopg.Error as exc:
                error = outage.failed(exc, conninfo, kwargs)
            else:
                outage.succeeded()
                return conn
            # Raised here, not in the except clause: the original error, whose
            # message may hold part of the password, is not chained to it.
            raise error

    return AsyncPooledConnection, outage
