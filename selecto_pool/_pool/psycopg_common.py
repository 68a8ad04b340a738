"""What the sync and async pools on psycopg_pool share: the connections'
TCP defaults, and psycopg_pool's arguments from the pool options (so that
``start_pool()`` and ``astart_pool()`` take the same options to the letter).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg_pool

from .._config.options import PoolOptions

# Detect a vanished peer (no FIN) within about a minute instead of hours.
TCP_KEEPALIVE_DEFAULTS = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}

# How long a background look at idle connections waits to take one before
# giving up (the pool got busy: whoever took the connection checks it anyway).
TAKE_IDLE_TIMEOUT = 0.01


def pool_arguments(options: PoolOptions) -> dict[str, Any]:
    """psycopg_pool's constructor arguments that the options decide."""
    return {
        "min_size": options.pool_size,
        "max_size": options.max_size,
        "timeout": options.checkout_timeout,
        "max_lifetime": options.max_lifetime,
        "max_idle": options.max_idle,
        "max_waiting": options.max_waiting,
        "num_workers": options.num_workers,
        # Never given up unless set (see PoolOptions.reconnect_timeout).
        "reconnect_timeout": options.reconnect_timeout,
        "reconnect_failed": options.reconnect_failed,
    }


def async_check(check: Callable[[Any], Any] | None) -> Any:
    """psycopg_pool's async ``check`` for the option: ``check=True`` is the
    async pool's ``check_connection``; a function's result is awaited when it
    is awaitable (an ``async def``, or ``lambda conn: conn.execute("")``)."""
    if check is None:
        return None
    if check is psycopg_pool.ConnectionPool.check_connection:
        return psycopg_pool.AsyncConnectionPool.check_connection

    async def awaited(conn: psycopg.AsyncConnection[Any]) -> None:
        result = check(conn)
        if inspect.isawaitable(result):
            await result

    return awaited
