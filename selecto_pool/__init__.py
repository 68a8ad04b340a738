"""selecto-pool: a production-grade PostgreSQL connection pool for Django.

Use it as a database backend (``ENGINE: "selecto_pool.backend"``, or
``"selecto_pool.backend.mysql"`` for MySQL and MariaDB) and, without the ORM,
through the functions below, which share the ORM's pools; asyncio code uses
their ``a``-prefixed counterparts on a pool of ``astart_pool()``.
"""

from __future__ import annotations

from ._api import (
    Result,
    checkin,
    checkout,
    clear_cache,
    execute,
    get_pool,
    pool_stats,
    start_pool,
    stop_pool,
    transaction,
    with_connection,
)
from ._async_api import (
    acheckin,
    acheckout,
    aclear_cache,
    aexecute,
    astart_pool,
    astop_pool,
    atransaction,
    awith_connection,
)
from ._config.options import PoolOptions
from ._conn.async_mysql import AsyncMySQLConnection, AsyncMySQLCursor
from ._pool.async_mysql import AsyncMySQLPool
from ._pool.async_pool import AsyncSelectoPool
from ._pool.mysql import MySQLPool
from ._pool.pool import SelectoPool
from ._pool.stats import PoolStats
from .errors import (
    CheckoutTimeout,
    ConnectionInterrupted,
    ConnectionReturned,
    IncompatibleVersion,
    PoolClosed,
    PoolError,
    PoolStartError,
)

__all__ = [
    "AsyncMySQLConnection",
    "AsyncMySQLCursor",
    "AsyncMySQLPool",
    "AsyncSelectoPool",
    "CheckoutTimeout",
    "ConnectionInterrupted",
    "ConnectionReturned",
    "IncompatibleVersion",
    "MySQLPool",
    "PoolClosed",
    "PoolError",
    "PoolOptions",
    "PoolStartError",
    "PoolStats",
    "Result",
    "SelectoPool",
    "acheckin",
    "acheckout",
    "aclear_cache",
    "aexecute",
    "astart_pool",
    "astop_pool",
    "atransaction",
    "awith_connection",
    "checkin",
    "checkout",
    "clear_cache",
    "execute",
    "get_pool",
    "pool_stats",
    "start_pool",
    "stop_pool",
    "transaction",
    "with_connection",
]
