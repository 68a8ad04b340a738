"""The server the benchmark runs against, and what it sees of each run.

Without ``DATABASE_URL`` a private server (``testproject.pgserver``) is
started and destroyed afterwards, on errors and Ctrl-C too. Either way the
runs use a database of their own, ``selecto_bench``, created fresh and dropped
at the end, so that every configuration sees the same tables and statistics.
``provision_mysql()`` does the same on a private MariaDB (``--mysql``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg

DATABASE = "selecto_bench"


@dataclass(frozen=True)
class Target:
    """Where the runs connect (URLs hold a password: never print them)."""

    url: str
    admin_url: str
    local: bool
    #: "postgresql" or "mysql"; the server's pid when it runs here (MariaDB:
    #: one process, whose CPU time is the server's).
    vendor: str = "postgresql"
    server_pid: int | None = None


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def provision(url: str | None) -> Iterator[Target]:
    """A fresh benchmark database, on ``url``'s server or a private one."""
    server = None
    if not url:
        from testproject.pgserver import LocalPostgres

        server = LocalPostgres()
        try:
            server.start()
        except BaseException:
            server.destroy()
            raise
        url = server.url
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {DATABASE}")
        try:
            yield Target(with_database(url, DATABASE), url, local=server is not None)
        finally:
            if server is None:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    finally:
        if server is not None:
            server.destroy()


def server_version(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


@contextlib.contextmanager
def provision_mysql() -> Iterator[Target]:
    """A fresh benchmark database on a private MariaDB, destroyed afterwards."""
    from testproject.mariaserver import LocalMariaDB

    server = LocalMariaDB()
    try:
        server.start()
        conn = mysql_connect(server.url)
        conn.cursor().execute(f"CREATE DATABASE {DATABASE}")
        conn.close()
        assert server.process is not None
        yield Target(
            server.url_for(DATABASE),
            server.url,
            local=True,
            vendor="mysql",
            server_pid=server.process.pid,
        )
    finally:
        server.destroy()


def mysql_connect(url: str) -> Any:
    """A mysqlclient connection (autocommit) to the server of a mysql:// URL."""
    import MySQLdb

    parts = urlsplit(url)
    return MySQLdb.connect(
        host=parts.hostname or "",
        port=parts.port or 3306,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=unquote(parts.path.lstrip("/")),
        autocommit=True,
    )


def mysql_server_version(url: str) -> str:
    conn = mysql_connect(url)
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT VERSION()")
        return str(cursor.fetchone()[0])
    finally:
        conn.close()
