"""The direct API on MySQL and MariaDB: ``start_pool(config, adapter="mysql")``.

What differs from PostgreSQL, for ``_api`` to call: parsing ``config`` into
mysqlclient ``connect()`` arguments, the probe connection, running one
statement, and a transaction. Connections handed out are plain mysqlclient
(``MySQLdb``) connections in autocommit mode; parameters use mysqlclient's
``%s`` / ``%(name)s`` placeholders and are bound on the client (MySQL
connections prepare nothing: see docs/prepared-statements.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from ._config.mysql import build_mysql_options
from ._conn.mysql import open_connection
from ._pool.mysql import MySQLPool
from ._process import registry
from .errors import PoolStartError

SCHEMES = ("mysql", "mariadb")
# URL query values are strings; these mysqlclient arguments take integers.
_INTEGERS = ("port", "connect_timeout", "read_timeout", "write_timeout")


def start_pool(config: str | Mapping[str, Any], name: str, **options: Any) -> MySQLPool:
    """A MySQL pool, checked with one connection before it is returned."""
    pool_options = build_mysql_options(**options)
    kwargs = {
        "connect_timeout": pool_options.connection_timeout,
        "charset": "utf8mb4",
        **_connect_arguments(config, name),
    }
    _probe(kwargs, name)
    pool = MySQLPool(name=name, options=pool_options, kwargs=kwargs)
    pool.open()
    registry.track(pool)
    return pool


def run(
    conn: Any, sql: str, params: Sequence[Any] | Mapping[str, Any] | None
) -> tuple[list[tuple[Any, ...]], tuple[str, ...], int]:
    """Run one statement: (rows, column names, row count)."""
    import MySQLdb.cursors

    # mysqlclient's plain cursor, whatever cursorclass the connection has.
    cursor = conn.cursor(MySQLdb.cursors.Cursor)
    try:
        cursor.execute(sql, params)
        description = cursor.description
        rows = [tuple(row) for row in cursor.fetchall()] if description else []
        columns = tuple(column[0] for column in description or ())
        return rows, columns, cursor.rowcount
    finally:
        cursor.close()


@contextlib.contextmanager
def transaction(conn: Any) -> Iterator[Any]:
    """BEGIN; COMMIT if the block succeeds, ROLLBACK (and re-raise) if not."""
    conn.begin()
    try:
        yield conn
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def _connect_arguments(config: Any, name: str) -> dict[str, Any]:
    """``config`` (a mysql:// URL or a mapping) as mysqlclient arguments."""
    if isinstance(config, Mapping):
        return dict(config)
    if not isinstance(config, str):
        raise TypeError(
            "start_pool(adapter='mysql') takes a mysql:// URL or a mapping of "
            f"MySQLdb.connect() arguments; got {type(config).__name__}"
        )
    # Never echo the URL in an error: it may hold a password.
    try:
        parts = urlsplit(config)
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(
            f"start_pool({name!r}): invalid connection URL"
        ) from None
    if parts.scheme not in SCHEMES:
        raise ImproperlyConfigured(
            f"start_pool({name!r}): the URL's scheme is {parts.scheme!r}; "
            f"expected one of {', '.join(SCHEMES)} with adapter='mysql'"
        )
    kwargs: dict[str, Any] = {}
    for key, value in (
        ("host", parts.hostname),
        ("port", port),
        ("user", unquote(parts.username or "")),
        ("password", unquote(parts.password or "")),
        ("database", unquote(parts.path.lstrip("/"))),
    ):
        if value:
            kwargs[key] = value
    for key, value in parse_qsl(parts.query):
        kwargs[key] = int(value) if key in _INTEGERS and value.isdigit() else value
    return kwargs


def _probe(kwargs: Mapping[str, Any], name: str) -> None:
    """Connect once before opening, to fail with the server's reason."""
    import MySQLdb

    try:
        conn: Any = open_connection(kwargs)
        conn.close()
    except TypeError as exc:
        # mysqlclient names the unknown argument, never a value.
        raise ImproperlyConfigured(
            f"start_pool({name!r}): invalid connection arguments ({exc})"
        ) from None
    except MySQLdb.Error as exc:
        raise PoolStartError(f"pool {name!r} cannot connect: {exc}") from None
