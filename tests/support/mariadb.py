"""The MariaDB the MySQL tests run against, and reaching it around the pool.

Debian's ``mariadb-server`` and mysqlclient (the ``mysql`` extra, built
against ``libmariadb-dev``): ``python3 dev.py test`` installs both when run as
root on Debian. Without them, ``unavailable()`` says what is missing and the
MySQL tests are skipped with that message.

The shared server is started on first use, once per test process, and
destroyed at exit; tests that stop or restart a server get their own
(``LocalMariaDB`` in a fixture). Every test database lives on it: each test
module's pools connect to a database of the module's own, so that the
server's process list tells their connections apart.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import time
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import connections

from testproject.mariaserver import LocalMariaDB, find_binaries

ENGINE = "selecto_pool.backend.mysql"
_server: LocalMariaDB | None = None


def unavailable() -> str | None:
    """Why the MySQL tests can't run here, or None."""
    if find_binaries() is None:
        return (
            "MariaDB tests skipped: no mariadbd (Debian's mariadb-server package; "
            "python3 dev.py test installs it when run as root on Debian)"
        )
    if importlib.util.find_spec("MySQLdb") is None:
        return (
            "MariaDB tests skipped: mysqlclient is not installed (the 'mysql' "
            "extra; it builds against libmariadb-dev and pkg-config, which "
            "python3 dev.py test installs when run as root on Debian)"
        )
    return None


def server() -> LocalMariaDB:
    """The shared server, started on first use and destroyed at exit."""
    global _server
    if _server is None:
        _server = LocalMariaDB().start()
        owner = os.getpid()
        started = _server
        atexit.register(lambda: os.getpid() == owner and started.destroy())
    return _server


def connect(server: LocalMariaDB, dbname: str | None = None) -> Any:
    """A mysqlclient connection outside every pool, in autocommit."""
    import MySQLdb

    conn: Any = MySQLdb.connect(**server.connect_kwargs(dbname), autocommit=True)
    return conn


def recreate_database(server: LocalMariaDB, dbname: str) -> None:
    """``dbname``, empty, with no session left on it by an earlier test (a
    closed session may linger a moment in the server's process list)."""
    observer = Observer(server)
    try:
        deadline = time.monotonic() + 10
        while sessions := observer.sessions_on(dbname):
            assert time.monotonic() < deadline, f"sessions stay on {dbname}"
            for session in sessions:
                with contextlib.suppress(Exception):  # gone meanwhile
                    observer.rows(f"KILL {int(session)}")
            time.sleep(0.01)
        observer.rows(f"DROP DATABASE IF EXISTS `{dbname}`")
        observer.rows(f"CREATE DATABASE `{dbname}`")
    finally:
        observer.close()


class Observer:
    """A connection outside every pool, to see and do what the server does."""

    def __init__(self, server: LocalMariaDB):
        self.conn = connect(server)

    def sessions_on(self, dbname: str) -> list[int]:
        """The ids of the sessions using ``dbname`` (but this one)."""
        return [
            row[0]
            for row in self.rows(
                "SELECT ID FROM information_schema.PROCESSLIST "
                "WHERE DB = %s AND ID != CONNECTION_ID()",
                [dbname],
            )
        ]

    def kill(self, ids: list[int]) -> None:
        for session in ids:
            self.rows(f"KILL {int(session)}")

    def rows(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        cursor = self.conn.cursor()
        try:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def close(self) -> None:
        self.conn.close()


def engine_settings(
    server: LocalMariaDB, dbname: str, **options: Any
) -> dict[str, Any]:
    """A ``DATABASES`` entry for the MySQL ENGINE; ``options`` go to OPTIONS
    (``pool=...`` is the pool's dict)."""
    return {
        "ENGINE": ENGINE,
        "NAME": dbname,
        "USER": "selecto",
        "PASSWORD": server.password,
        "HOST": "127.0.0.1",
        "PORT": str(server.port),
        "OPTIONS": options,
    }


@contextlib.contextmanager
def registered_alias(alias: str, settings_dict: dict[str, Any]) -> Iterator[str]:
    """``alias`` in ``DATABASES`` (and ``connections``) for the block's length.

    Django reads ``DATABASES`` once; overriding it is unsupported, so the
    alias is added to both and removed afterwards, its pool stopped.
    """
    completed = connections.configure_settings({"default": settings_dict})["default"]
    # The same dict as settings.DATABASES, which checks and commands read.
    connections.settings[alias] = completed
    assert settings.DATABASES[alias] is completed
    try:
        yield alias
    finally:
        wrapper = connections[alias]
        wrapper.close()
        close_pool = getattr(wrapper, "close_pool", None)
        if close_pool is not None:
            close_pool()
        del connections[alias]
        del connections.settings[alias]
