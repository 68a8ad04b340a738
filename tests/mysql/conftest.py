"""Fixtures of the MySQL and MariaDB tests; their helpers are in
``tests/support/mariadb.py``. Every test here is skipped, with the reason,
where MariaDB or mysqlclient is missing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connections

import selecto_pool as sp
from selecto_pool import MySQLPool
from testproject.library.models import Author
from testproject.mariaserver import LocalMariaDB

from ..support import mariadb
from ..support.mariadb import Observer


@pytest.fixture(scope="session")
def mariadb_server() -> LocalMariaDB:
    reason = mariadb.unavailable()
    if reason:
        pytest.skip(reason)
    return mariadb.server()


@pytest.fixture
def database(mariadb_server: LocalMariaDB, request: pytest.FixtureRequest) -> str:
    """A fresh database named after the test module."""
    name = f"selecto_{request.module.__name__.rpartition('.')[2]}"
    mariadb.recreate_database(mariadb_server, name)
    return name


@pytest.fixture
def observer(mariadb_server: LocalMariaDB) -> Iterator[Observer]:
    observer = Observer(mariadb_server)
    yield observer
    observer.close()


@pytest.fixture
def start_mysql_pool(
    mariadb_server: LocalMariaDB, database: str
) -> Iterator[Callable[..., MySQLPool]]:
    """``start_mysql_pool(**options)``: ``start_pool(adapter="mysql")`` on the
    module's database, the pool stopped at the end of the test."""
    pools: list[MySQLPool] = []

    def start(**options: Any) -> MySQLPool:
        pool = sp.start_pool(
            mariadb_server.connect_kwargs(database), adapter="mysql", **options
        )
        pools.append(pool)
        return pool

    yield start
    for pool in pools:
        sp.stop_pool(pool)


@pytest.fixture
def mysql_alias(
    mariadb_server: LocalMariaDB, database: str, django_db_blocker: Any
) -> Iterator[Callable[..., str]]:
    """``mysql_alias(**pool)``: the alias "mysql" on the ENGINE with these pool
    options (``pool=False``: unpooled), its database holding the demo's Author
    table."""
    stack: list[Any] = []

    def register(alias: str = "mysql", pool: Any = None, **options: Any) -> str:
        pool = options if pool is None else pool
        settings_dict = mariadb.engine_settings(mariadb_server, database, pool=pool)
        context = mariadb.registered_alias(alias, settings_dict)
        context.__enter__()
        stack.append(context)
        wrapper = connections[alias]
        if Author._meta.db_table not in wrapper.introspection.table_names():
            with wrapper.schema_editor() as editor:
                editor.create_model(Author)
        wrapper.close()  # back to the pool, as at the end of a request
        return alias

    with django_db_blocker.unblock():
        yield register
        while stack:
            stack.pop().__exit__(None, None, None)
