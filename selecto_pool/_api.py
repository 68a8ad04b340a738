"""Direct use of the pool, without the ORM (Selecto.ConnectionPool's functions).

``pool`` is either a pool returned by ``start_pool()`` or the name of a Django
database alias, whose pool is the very one the ORM uses. Connections handed
out are plain psycopg connections, in autocommit mode (mysqlclient ones for
MySQL pools: see ``_mysql_api``).
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

from . import _mysql_api
from ._config.conninfo import connect_arguments
from ._config.options import build_options
from ._pool.mysql import MySQLPool
from ._pool.pool import Connection, SelectoPool
from ._pool.stats import PoolStats
from ._process import registry
from .errors import PoolStartError

T = TypeVar("T")
AnyPool = SelectoPool | MySQLPool
PoolRef = SelectoPool | MySQLPool | str
ADAPTERS = ("postgresql", "mysql")
_direct_pool_numbers = itertools.count(1)


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
    name = name or f"direct-{next(_direct_pool_numbers)}"
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
def checkout(pool: PoolRef, timeout: float | None = None) -> Any:
    """Take a connection; give it back with ``checkin()``, in a ``finally``."""
    return _resolve(pool).getconn(timeout)


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
def transaction(pool: PoolRef, fn: Callable[[Any], T] | None = None) -> Any:
    """Run ``fn(conn)`` in a transaction: committed, or rolled back and re-raised."""
    if fn is None:
        return _in_transaction(_resolve(pool))
    with _in_transaction(_resolve(pool)) as conn:
        return fn(conn)


def execute(
    pool: PoolRef,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
    *,
    prepare: bool | None = None,
) -> Result:
    """Run one statement on a pooled connection and fetch its rows.

    Parameters are bound server-side (psycopg's ``Cursor``, whatever cursor
    class the connection defaults to), so that ``prepare=True`` can work.
    On MySQL they are bound on the client, and ``prepare=True`` is refused.
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
        cursor.execute(sql, params, prepare=prepare)
        description = cursor.description
        return Result(
            rows=cursor.fetchall() if description else [],
            columns=tuple(column.name for column in description or ()),
            rowcount=cursor.rowcount,
            status=cursor.statusmessage,
        )


def pool_stats(pool: PoolRef) -> PoolStats:
    """A snapshot of the pool's counters (safe to log or publish)."""
    return _resolve(pool).stats()


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
    except psycopg.ProgrammingError:
        error = ImproperlyConfigured(
            f"start_pool({name!r}): invalid connection string or arguments"
        )
    except psycopg.OperationalError as exc:
        error = PoolStartError(f"pool {name!r} cannot connect: {exc}")
    raise error
