"""The async direct API on MySQL and MariaDB: ``astart_pool(config, adapter="mysql")``.

What ``_async_api`` calls for a pool of ``AsyncMySQLPool``: starting it
(``_mysql_api.start_pool()`` in the pool's own threads: the same options,
validation and errors), running one statement, and borrowing a connection,
with or without a transaction. Connections handed out are
``AsyncMySQLConnection`` proxies (``_conn.async_mysql``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from . import _mysql_api
from ._api import Result
from ._config.mysql import build_mysql_options
from ._conn.async_mysql import AsyncMySQLConnection
from ._pool.async_mysql import AsyncMySQLPool


async def astart_pool(
    config: str | Mapping[str, Any], name: str, **options: Any
) -> AsyncMySQLPool:
    """A MySQL pool for the running event loop, checked with one connection."""
    # Validated here, as start_pool() validates them, before any thread.
    pool_options = build_mysql_options(**options)
    return await AsyncMySQLPool.start(
        name,
        pool_options,
        lambda: _mysql_api.start_pool(config, name, **options),
    )


async def aexecute(
    pool: AsyncMySQLPool,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] | None,
    prepare: bool | None,
) -> Result:
    """``execute()``'s MySQL statement, its calls in the pool's threads."""
    if prepare:
        raise ValueError(
            "aexecute(prepare=True) on a MySQL pool: mysqlclient binds "
            "parameters on the client, MySQL connections prepare nothing"
        )
    async with borrowed(pool) as conn:
        rows, columns, rowcount = await conn.call(_mysql_api.run, conn.raw, sql, params)
    return Result(rows=rows, columns=columns, rowcount=rowcount, status=None)


@contextlib.asynccontextmanager
async def borrowed(pool: AsyncMySQLPool) -> AsyncIterator[AsyncMySQLConnection]:
    conn = await pool.getconn()
    try:
        yield conn
    finally:
        # Also when the task is cancelled: a query still running is stopped
        # first (see AsyncMySQLPool.interrupted).
        await pool.putconn(conn)


@contextlib.asynccontextmanager
async def in_transaction(pool: AsyncMySQLPool) -> AsyncIterator[AsyncMySQLConnection]:
    """BEGIN; COMMIT if the block succeeds, ROLLBACK (and re-raise) if not."""
    async with borrowed(pool) as conn:
        await conn.begin()
        try:
            yield conn
        except BaseException:
            if conn.interruption is None:
                # If this fails too, the return to the pool rolls back (or
                # discards the connection); the block's error is the one raised.
                with contextlib.suppress(Exception):
                    await conn.rollback()
            raise
        await conn.commit()
