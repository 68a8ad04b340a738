"""The direct API for asyncio code: ``astart_pool()``, ``aexecute()``...

Each function is the sync one's counterpart, named as Django names its async
variants (``a`` prefix), with the same options, validation, errors and
statement-cache semantics, on an ``AsyncSelectoPool`` that never blocks the
event loop. The pool belongs to the loop that started it.

``adapter="mysql"`` gives an ``AsyncMySQLPool`` (``_async_mysql_api``): the
sync ``MySQLPool`` run in worker threads of its own, as mysqlclient has no
asyncio interface.

Database aliases are refused: the ORM's pool of an alias is a sync pool, and
Django sets its connections up (time zone, role) with sync I/O; an async
pool is started by the application, in the loop that uses it (an ASGI
lifespan handler, for instance).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar, overload

import psycopg
from django.core.exceptions import ImproperlyConfigured

from . import _async_mysql_api
from ._api import (
    ADAPTERS,
    Result,
    binds_server_side,
    inlined,
    pool_name,
    start_error,
)
from ._config.conninfo import connect_arguments
from ._config.options import build_options
from ._config.values import shown
from ._conn import async_execution, decisions
from ._conn.async_execution import AsyncAttempt
from ._conn.async_mysql import AsyncMySQLConnection
from ._pool.async_mysql import AsyncMySQLPool
from ._pool.async_pool import AsyncConnection, AsyncSelectoPool
from ._pool.mysql import MySQLPool
from ._pool.pool import SelectoPool
from ._process import registry

T = TypeVar("T")
AsyncPool = AsyncSelectoPool | AsyncMySQLPool
AnyConnection = AsyncConnection | AsyncMySQLConnection


@overload
async def astart_pool(
    config: str | Mapping[str, Any],
    *,
    name: str | None = None,
    adapter: Literal["postgresql"] = "postgresql",
    **options: Any,
) -> AsyncSelectoPool: ...
@overload
async def astart_pool(
    config: str | Mapping[str, Any],
    *,
    name: str | None = None,
    adapter: Literal["mysql"],
    **options: Any,
) -> AsyncMySQLPool: ...
async def astart_pool(
    config: str | Mapping[str, Any],
    *,
    name: str | None = None,
    adapter: str = "postgresql",
    **options: Any,
) -> AsyncPool:
    """Start an async pool in the running event loop, checked with one
    connection first (see ``start_pool()``: same arguments, same errors).

    ``adapter="mysql"``: an ``AsyncMySQLPool``, whose mysqlclient calls run
    in worker threads of its own (mysqlclient has no asyncio interface).
    """
    if adapter not in ADAPTERS:
        raise ImproperlyConfigured(
            f"astart_pool() adapter = {shown(adapter)} is invalid: expected "
            f"{' or '.join(repr(known) for known in ADAPTERS)}."
        )
    if adapter == "mysql":
        return await _async_mysql_api.astart_pool(config, pool_name(name), **options)
    pool_options = build_options("astart_pool()", **options)
    name = pool_name(name)
    kwargs = {
        "connect_timeout": pool_options.connection_timeout,
        **connect_arguments(config, name),
        "autocommit": True,
    }
    pool = AsyncSelectoPool(name=name, options=pool_options, kwargs=kwargs)
    await _probe(pool.connection_class, kwargs, name)
    await pool.open()
    registry.track(pool)
    return pool


async def astop_pool(pool: AsyncPool, timeout: float = 5.0) -> None:
    """Drain then close: wait up to ``timeout`` s for checked-out connections."""
    await _resolve(pool).stop(timeout)


@overload
async def acheckout(
    pool: AsyncSelectoPool, timeout: float | None = None
) -> AsyncConnection: ...
@overload
async def acheckout(
    pool: AsyncMySQLPool, timeout: float | None = None
) -> AsyncMySQLConnection: ...
async def acheckout(pool: AsyncPool, timeout: float | None = None) -> AnyConnection:
    """Take a connection; give it back with ``acheckin()``, in a ``finally``."""
    return await _resolve(pool).getconn(timeout)


async def acheckin(pool: AsyncPool, conn: Any) -> None:
    """Give back a connection (an open transaction is rolled back)."""
    await _resolve(pool).putconn(conn)


@overload
def awith_connection(
    pool: AsyncSelectoPool, fn: None = None
) -> contextlib.AbstractAsyncContextManager[AsyncConnection]: ...
@overload
def awith_connection(
    pool: AsyncSelectoPool, fn: Callable[[AsyncConnection], Awaitable[T]]
) -> Awaitable[T]: ...
@overload
def awith_connection(
    pool: AsyncMySQLPool, fn: None = None
) -> contextlib.AbstractAsyncContextManager[AsyncMySQLConnection]: ...
@overload
def awith_connection(
    pool: AsyncMySQLPool, fn: Callable[[AsyncMySQLConnection], Awaitable[T]]
) -> Awaitable[T]: ...
def awith_connection(
    pool: AsyncPool, fn: Callable[[Any], Awaitable[T]] | None = None
) -> Any:
    """``async with awith_connection(pool) as conn``, or ``await
    awith_connection(pool, fn)``: a borrowed connection, given back even on
    error or cancellation. Nothing is committed for you."""
    resolved = _resolve(pool)
    borrowed: contextlib.AbstractAsyncContextManager[Any] = (
        _async_mysql_api.borrowed(resolved)
        if isinstance(resolved, AsyncMySQLPool)
        else _borrowed(resolved)
    )
    return borrowed if fn is None else _call(borrowed, fn)


@overload
def atransaction(
    pool: AsyncSelectoPool, fn: None = None
) -> contextlib.AbstractAsyncContextManager[AsyncConnection]: ...
@overload
def atransaction(
    pool: AsyncSelectoPool, fn: Callable[[AsyncConnection], Awaitable[T]]
) -> Awaitable[T]: ...
@overload
def atransaction(
    pool: AsyncMySQLPool, fn: None = None
) -> contextlib.AbstractAsyncContextManager[AsyncMySQLConnection]: ...
@overload
def atransaction(
    pool: AsyncMySQLPool, fn: Callable[[AsyncMySQLConnection], Awaitable[T]]
) -> Awaitable[T]: ...
def atransaction(
    pool: AsyncPool, fn: Callable[[Any], Awaitable[T]] | None = None
) -> Any:
    """``async with atransaction(pool) as conn``, or ``await atransaction(pool,
    fn)``: committed, or rolled back and re-raised (cancellation included)."""
    resolved = _resolve(pool)
    block: contextlib.AbstractAsyncContextManager[Any] = (
        _async_mysql_api.in_transaction(resolved)
        if isinstance(resolved, AsyncMySQLPool)
        else _in_transaction(resolved)
    )
    return block if fn is None else _call(block, fn)


async def aexecute(
    pool: AsyncPool,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
    *,
    prepare: bool | None = None,
) -> Result:
    """Run one statement on a pooled connection and fetch its rows, as
    ``execute()`` does (the same statement-cache semantics; on MySQL
    parameters are bound on the client, and ``prepare=True`` is refused)."""
    resolved = _resolve(pool)
    if isinstance(resolved, AsyncMySQLPool):
        return await _async_mysql_api.aexecute(resolved, sql, params, prepare)
    async with _borrowed(resolved) as conn:
        cursor = psycopg.AsyncCursor(conn)
        async with cursor:
            if not binds_server_side(sql, params):
                await cursor.execute(
                    inlined(psycopg.AsyncClientCursor(conn), sql, params),
                    prepare=False,
                )
            else:

                async def server_side(prepare: bool | None) -> object:
                    return await cursor.execute(sql, params, prepare=prepare)

                async def stock() -> object:
                    client = psycopg.AsyncClientCursor(conn)
                    return await cursor.execute(
                        inlined(client, sql, params), prepare=False
                    )

                attempt = AsyncAttempt(
                    decisions.signature(sql, () if params is None else params),
                    server_side,
                    stock,
                )
                await async_execution.run(conn, attempt, prepare)
            description = cursor.description
            return Result(
                rows=await cursor.fetchall() if description else [],
                columns=tuple(column.name for column in description or ()),
                rowcount=cursor.rowcount,
                status=cursor.statusmessage,
            )


async def aclear_cache(pool: AsyncPool) -> None:
    """Deallocate the prepared statements of every connection of the pool
    (nothing on MySQL, whose connections prepare nothing)."""
    await _resolve(pool).clear_prepared()


@contextlib.asynccontextmanager
async def _borrowed(pool: AsyncSelectoPool) -> AsyncIterator[AsyncConnection]:
    conn = await pool.getconn()
    try:
        yield conn
    finally:
        # Also when the task is cancelled: putconn() resets the connection
        # (psycopg has cancelled its query) or closes it if it can't.
        await pool.putconn(conn)


@contextlib.asynccontextmanager
async def _in_transaction(pool: AsyncSelectoPool) -> AsyncIterator[AsyncConnection]:
    async with _borrowed(pool) as conn, conn.transaction():
        yield conn


async def _call(
    block: contextlib.AbstractAsyncContextManager[AsyncConnection],
    fn: Callable[[AsyncConnection], Awaitable[T]],
) -> T:
    async with block as conn:
        return await fn(conn)


@overload
def _resolve(pool: AsyncSelectoPool) -> AsyncSelectoPool: ...
@overload
def _resolve(pool: AsyncMySQLPool) -> AsyncMySQLPool: ...
@overload
def _resolve(pool: AsyncPool) -> AsyncPool: ...
def _resolve(pool: AsyncPool) -> AsyncPool:
    if isinstance(pool, (AsyncSelectoPool, AsyncMySQLPool)):
        return pool
    if isinstance(pool, str):
        raise TypeError(
            f"the async API takes a pool from astart_pool(), not a database alias "
            f"({pool!r}): the ORM's pool is a sync pool. Start an async pool for "
            "it (in the ASGI lifespan, say), or call the sync API through "
            "sync_to_async()"
        )
    sync = isinstance(pool, (SelectoPool, MySQLPool))
    hint = ": use the sync functions for it" if sync else ""
    raise TypeError(
        f"expected a pool from astart_pool(), got {type(pool).__name__}{hint}"
    )


async def _probe(
    connection_class: type[AsyncConnection], kwargs: Mapping[str, Any], name: str
) -> None:
    """Connect once before opening, to fail with the server's reason (see
    ``_api._probe``: nothing is chained to the error)."""
    error: Exception
    try:
        conn = await connection_class.connect(**kwargs)
        await conn.close()
        return
    except psycopg.Error as exc:
        error = start_error(exc, name)
    raise error
