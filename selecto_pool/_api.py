"""Direct use of the pool, without the ORM (Selecto.ConnectionPool's functions).

``pool`` is either a pool returned by ``start_pool()`` or the name of a Django
database alias, whose pool is the very one the ORM uses. Connections handed
out are plain psycopg connections, in autocommit mode (mysqlclient ones for
MySQL pools: see ``_mysql_api``).

Each function that does I/O raises Django's ``SynchronousOnlyOperation`` when
called from a running event loop (it would block it): async code awaits the
``a``-prefixed counterparts of ``_async_api`` instead.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast, overload

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.utils.asyncio import async_unsafe

from . import _mysql_api
from ._config.conninfo import connect_arguments
from ._config.options import build_options
from ._conn import decisions, execution
from ._conn.execution import Attempt
from ._pool.async_mysql import AsyncMySQLPool
from ._pool.async_pool import AsyncSelectoPool
from ._pool.mysql import MySQLPool
from ._pool.pool import Connection, SelectoPool
from ._pool.stats import PoolStats
from ._process import registry
from .errors import PoolStartError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
AnyPool = SelectoPool | MySQLPool
PoolRef = SelectoPool | MySQLPool | str
ADAPTERS = ("postgresql", "mysql")
_direct_pool_numbers = itertools.count(1)


def _blocks(name: str) -> Callable[[F], F]:
    """Django's ``async_unsafe``, with a message naming the async counterpart.

    A sync call from a running event loop blocks every other task of it
    until the database answers; Django refuses the same for the ORM.
    """
    decorator: Callable[[F], F] = async_unsafe(
        f"{name}() blocks the event loop: in async code, await a{name}() on a "
        f"pool from astart_pool(), or call {name}() through sync_to_async(). "
        "Set DJANGO_ALLOW_ASYNC_UNSAFE to allow it anyway."
    )
    return decorator


@dataclass(frozen=True)
class Result:
    """What ``execute()`` returns: the rows fetched and the command's outcome."""

    rows: list[tuple[Any, ...]]
    columns: tuple[str, ...]
    rowcount: int
    status: str | None

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def get_pool(alias: str = "default") -> AnyPool:
    """The pool the ORM uses for ``alias`` (opened if it was not yet)."""
    from .backend import engines

    wrapper = connections[alias]
    if not engines.is_selecto(wrapper):
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}]['ENGINE'] is {wrapper.settings_dict['ENGINE']!r}, "
            "not 'selecto_pool.backend' or 'selecto_pool.backend.mysql': it has "
            "no selecto_pool pool."
        )
    pool: AnyPool | None = cast(Any, wrapper).pool
    if pool is None:
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}] has pooling disabled (OPTIONS['pool'] is False)."
        )
    pool.open()
    return pool


@overload
def start_pool(
    config: str | Mapping[str, Any],
    *,
    name: str | None = None,
    adapter: Literal["postgresql"] = "postgresql",
    **options: Any,
) -> SelectoPool: ...
@overload
def start_pool(
    config: str | Mapping[str, Any],
    *,
    name: str | None = None,
    adapter: Literal["mysql"],
    **options: Any,
) -> MySQLPool: ...
@_blocks("start_pool")
def start_pool(
    config: str | Mapping[str, Any],
    *,
    name: str | None = None,
    adapter: str = "postgresql",
    **options: Any,
) -> AnyPool:
    """Start a pool of its own, checked with one connection before it returns.

    ``config`` is a libpq connection string or URL, or a mapping of psycopg
    ``connect()`` arguments; ``options`` are pool options (``pool_size=...``).
    What ``config`` says wins over the pool's defaults (``connect_timeout``
    from ``connection_timeout``, TCP keepalives). Raises ``PoolStartError``
    with the server's reason if it cannot connect. ``adapter="mysql"``: a
    MySQL or MariaDB pool, ``config`` a ``mysql://`` URL or a mapping of
    mysqlclient ``connect()`` arguments.
    """
    if adapter not in ADAPTERS:
        raise ImproperlyConfigured(
            f"start_pool() adapter = {adapter!r} is invalid: expected "
            f"{' or '.join(repr(known) for known in ADAPTERS)}."
        )
    name = pool_name(name)
    if adapter == "mysql":
        return _mysql_api.start_pool(config, name, **options)
    pool_options = build_options(**options)
    kwargs = {
        "connect_timeout": pool_options.connection_timeout,
        **connect_arguments(config, name),
        "autocommit": True,
    }
    pool = SelectoPool(
        name=name, options=pool_options, kwargs=kwargs, check=pool_options.check
    )
    _probe(pool.connection_class, kwargs, name)
    pool.open()
    registry.track(pool)
    return pool


@_blocks("stop_pool")
def stop_pool(pool: PoolRef, timeout: float = 5.0) -> None:
    """Drain then close: wait up to ``timeout`` s for checked-out connections."""
    pool = _resolve(pool)
    alias = registry.alias_of(pool)
    if alias is not None:
        # The ORM builds a fresh pool for the alias on its next query.
        registry.discard(alias, pool)
    pool.stop(timeout)


@overload
def checkout(pool: SelectoPool, timeout: float | None = None) -> Connection: ...
@overload
def checkout(pool: MySQLPool | str, timeout: float | None = None) -> Any: ...
@_blocks("checkout")
def checkout(pool: PoolRef, timeout: float | None = None) -> Any:
    """Take a connection; give it back with ``checkin()``, in a ``finally``."""
    return _resolve(pool).getconn(timeout)


@_blocks("checkin")
def checkin(pool: PoolRef, conn: Any) -> None:
    """Give back a connection (an open transaction is rolled back)."""
    _resolve(pool).putconn(conn)


@overload
def with_connection(
    pool: SelectoPool, fn: None = None
) -> contextlib.AbstractContextManager[Connection]: ...
@overload
def with_connection(pool: SelectoPool, fn: Callable[[Connection], T]) -> T: ...
@overload
def with_connection(
    pool: MySQLPool | str, fn: None = None
) -> contextlib.AbstractContextManager[Any]: ...
@overload
def with_connection(pool: MySQLPool | str, fn: Callable[[Any], T]) -> T: ...
@_blocks("with_connection")
def with_connection(pool: PoolRef, fn: Callable[[Any], T] | None = None) -> Any:
    """Run ``fn(conn)`` on a borrowed connection; without ``fn``, a context manager.

    Nothing is committed for you: use ``transaction()`` for that.
    """
    if fn is None:
        return _borrowed(_resolve(pool))
    with _borrowed(_resolve(pool)) as conn:
        return fn(conn)


@overload
def transaction(
    pool: SelectoPool, fn: None = None
) -> contextlib.AbstractContextManager[Connection]: ...
@overload
def transaction(pool: SelectoPool, fn: Callable[[Connection], T]) -> T: ...
@overload
def transaction(
    pool: MySQLPool | str, fn: None = None
) -> contextlib.AbstractContextManager[Any]: ...
@overload
def transaction(pool: MySQLPool | str, fn: Callable[[Any], T]) -> T: ...
@_blocks("transaction")
def transaction(pool: PoolRef, fn: Callable[[Any], T] | None = None) -> Any:
    """Run ``fn(conn)`` in a transaction: committed, or rolled back and re-raised."""
    if fn is None:
        return _in_transaction(_resolve(pool))
    with _in_transaction(_resolve(pool)) as conn:
        return fn(conn)


@_blocks("execute")
def execute(
    pool: PoolRef,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
    *,
    prepare: bool | None = None,
) -> Result:
    """Run one statement on a pooled connection and fetch its rows.

    With the cache's semantics (``_conn.execution``): a statement is bound
    server-side and prepared once hot in this process, runs the stock way
    (bound client-side) when the server can't type it or it can't be
    prepared, and recovers from a schema change. ``prepare`` forces or
    forbids preparing, as psycopg's argument does. On MySQL parameters are
    bound on the client, and ``prepare=True`` is refused.
    """
    resolved = _resolve(pool)
    if isinstance(resolved, MySQLPool):
        if prepare:
            raise ValueError(
                "execute(prepare=True) on a MySQL pool: mysqlclient binds "
                "parameters on the client, MySQL connections prepare nothing"
            )
        with _borrowed(resolved) as conn:
            rows, columns, rowcount = _mysql_api.run(conn, sql, params)
        return Result(rows=rows, columns=columns, rowcount=rowcount, status=None)
    with _borrowed(resolved) as conn, psycopg.Cursor(conn) as cursor:
        if not binds_server_side(sql, params):
            cursor.execute(
                inlined(psycopg.ClientCursor(conn), sql, params), prepare=False
            )
        else:
            attempt = Attempt(
                decisions.signature(sql, () if params is None else params),
                lambda prepare: cursor.execute(sql, params, prepare=prepare),
                lambda: cursor.execute(
                    inlined(psycopg.ClientCursor(conn), sql, params), prepare=False
                ),
            )
            execution.run(conn, attempt, prepare)
        description = cursor.description
        return Result(
            rows=cursor.fetchall() if description else [],
            columns=tuple(column.name for column in description or ()),
            rowcount=cursor.rowcount,
            status=cursor.statusmessage,
        )


def binds_server_side(sql: Any, params: Any) -> bool:
    """Whether ``execute()`` binds ``sql`` server-side: as the ORM decides,
    and a single DML statement without parameters too (it can be prepared)."""
    if params is None:
        return execution.is_preparable(sql)
    return execution.binds_server_side(sql, params)


def inlined(
    client: psycopg.ClientCursor[Any] | psycopg.AsyncClientCursor[Any],
    sql: Any,
    params: Any,
) -> Any:
    """``sql`` with ``params`` bound client-side, as Django's stock cursor binds
    them (``client`` is a sync or async ``ClientCursor`` of the connection)."""
    return sql if params is None else client.mogrify(sql, params)


def pool_stats(pool: PoolRef | AsyncSelectoPool | AsyncMySQLPool) -> PoolStats:
    """A snapshot of the pool's counters (safe to log or publish).

    Reads counters only: it may be called from async code, and for a pool of
    ``astart_pool()`` too.
    """
    if isinstance(pool, (AsyncSelectoPool, AsyncMySQLPool)):
        return pool.stats()
    return _resolve(pool).stats()


@_blocks("clear_cache")
def clear_cache(pool: PoolRef) -> None:
    """Deallocate the prepared statements of every connection of the pool."""
    _resolve(pool).clear_prepared()


@contextlib.contextmanager
def _borrowed(pool: AnyPool) -> Iterator[Any]:
    conn = pool.getconn()
    try:
        yield conn
    finally:
        pool.putconn(conn)


@contextlib.contextmanager
def _in_transaction(pool: AnyPool) -> Iterator[Any]:
    with _borrowed(pool) as conn:
        block = (
            _mysql_api.transaction(conn)
            if isinstance(pool, MySQLPool)
            else conn.transaction()
        )
        with block:
            yield conn


def _resolve(pool: PoolRef) -> AnyPool:
    if isinstance(pool, (SelectoPool, MySQLPool)):
        return pool
    if isinstance(pool, str):
        return get_pool(pool)
    if isinstance(pool, (AsyncSelectoPool, AsyncMySQLPool)):
        raise TypeError(
            f"pool {pool.name!r} is an async pool from astart_pool(): use the "
            "async functions (aexecute(), acheckout(), astop_pool()...)"
        )
    raise TypeError(
        "expected a pool from start_pool() or a database alias, "
        f"got {type(pool).__name__}"
    )


def _probe(
    connection_class: type[Connection], kwargs: Mapping[str, Any], name: str
) -> None:
    """Connect once before opening, to fail with the server's reason.

    The errors are raised outside the except clauses, so that nothing is
    chained to them: the pool's connection class masks the password in the
    message it reports, and a ProgrammingError may quote the arguments.
    """
    error: Exception
    try:
        connection_class.connect(**kwargs).close()
        return
    except psycopg.Error as exc:
        error = start_error(exc, name)
    raise error


def start_error(exc: psycopg.Error, name: str) -> Exception:
    """What ``start_pool()`` raises when its first connection fails."""
    if isinstance(exc, psycopg.OperationalError):
        return PoolStartError(f"pool {name!r} cannot connect: {exc}")
    if isinstance(exc, psycopg.ProgrammingError):
        return ImproperlyConfigured(
            f"start_pool({name!r}): invalid connection string or arguments"
        )
    return PoolStartError(f"pool {name!r} cannot connect: {type(exc).__name__}")


def pool_name(name: str | None) -> str:
    """``name``, or the next ``direct-N`` (shared by sync and async pools)."""
    return name or f"direct-{next(_direct_pool_numbers)}"
