"""The MySQL ENGINE through the ORM: pooled connections, set up as Django's."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError, connections, transaction

from selecto_pool import CheckoutTimeout, get_pool
from testproject.library.models import Author
from testproject.mariaserver import LocalMariaDB

from ..support.clients import run_threads, wait_for
from ..support.mariadb import Observer
from ..support.processes import ROOT, demo_environment


def request(alias: str, work: Callable[[], Any]) -> Any:
    """One request: the work, then Django gives the connection back."""
    try:
        return work()
    finally:
        connections[alias].close()


def session_status(alias: str, name: str) -> int:
    with connections[alias].cursor() as cursor:
        cursor.execute("SHOW SESSION STATUS LIKE %s", [name])
        return int(cursor.fetchone()[1])


def test_requests_reuse_the_pools_connections(
    mysql_alias: Callable[..., str], observer: Observer, database: str
) -> None:
    alias = mysql_alias(pool_size=2, max_overflow=0)
    authors = Author.objects.using(alias)
    before = get_pool(alias).stats().checkouts
    request(alias, lambda: authors.create(name="Ada"))
    counts = [request(alias, authors.count) for _ in range(20)]
    assert counts == [1] * 20
    stats = get_pool(alias).stats()
    assert (stats.in_use, stats.checkouts - before) == (0, 21)
    assert stats.connections_opened == 2
    assert len(observer.sessions_on(database)) == 2


@pytest.mark.parametrize("health_checks", [False, True])
def test_a_checkout_costs_no_statement_and_the_session_is_djangos(
    mysql_alias: Callable[..., str], health_checks: bool
) -> None:
    alias = mysql_alias(pool_size=1, max_overflow=0)
    connections.settings[alias]["CONN_HEALTH_CHECKS"] = health_checks
    connections[alias].close_pool()

    def commands_so_far() -> tuple[int, int]:
        # Statements, and pings (which are not statements).
        return session_status(alias, "Questions"), session_status(
            alias, "Com_admin_commands"
        )

    before = request(alias, commands_so_far)
    for _ in range(10):
        request(alias, Author.objects.using(alias).count)
    after = request(alias, commands_so_far)
    # 10 counts and the SHOW STATUS: no SET, ping or ROLLBACK per checkout;
    # with CONN_HEALTH_CHECKS, a ping per checkout, as Django's backend.
    pings = 11 if health_checks else 0
    assert (after[0] - before[0], after[1] - before[1]) == (12, pings)

    def session() -> tuple[Any, ...]:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT @@tx_isolation, @@sql_auto_is_null, @@autocommit")
            return tuple(cursor.fetchone())

    assert request(alias, session) == ("READ-COMMITTED", 0, 1)


def test_the_isolation_level_option_is_applied(mysql_alias: Callable[..., str]) -> None:
    alias = mysql_alias(pool_size=1, max_overflow=0)
    connections.settings[alias]["OPTIONS"]["isolation_level"] = "serializable"
    connections[alias].close_pool()

    def level() -> str:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT @@tx_isolation")
            return str(cursor.fetchone()[0])

    assert request(alias, level) == "SERIALIZABLE"


def test_a_connection_returned_inside_atomic_is_rolled_back(
    mysql_alias: Callable[..., str],
) -> None:
    alias = mysql_alias(pool_size=1, max_overflow=0)
    atomic = transaction.atomic(using=alias)
    atomic.__enter__()
    Author.objects.using(alias).create(name="never committed")
    # The request ends without leaving the block (a killed view, a bug).
    connections[alias].close()
    atomic.__exit__(None, None, None)
    assert request(alias, Author.objects.using(alias).count) == 0
    assert get_pool(alias).stats().rollbacks_on_return == 1


def test_threads_share_pool_size_connections(
    mysql_alias: Callable[..., str], observer: Observer, database: str
) -> None:
    alias = mysql_alias(pool_size=2, max_overflow=0, checkout_timeout=10)

    def work(index: int) -> list[int]:
        return [Author.objects.using(alias).count() for _ in range(10)]

    assert run_threads(6, work) == [[0] * 10] * 6
    assert len(observer.sessions_on(database)) == 2
    assert get_pool(alias).stats().in_use == 0


def test_an_exhausted_pool_raises_checkout_timeout(
    mysql_alias: Callable[..., str],
) -> None:
    alias = mysql_alias(pool_size=1, max_overflow=0, checkout_timeout=0.3)
    connections[alias].ensure_connection()  # this thread holds the only one
    errors: list[BaseException] = []

    def query() -> None:
        try:
            Author.objects.using(alias).count()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=query)
    thread.start()
    thread.join(10)
    connections[alias].close()
    [error] = errors
    # Django's OperationalError, as the stock backend raises for a refused
    # connection, and not re-wrapped: code catching either keeps working.
    assert isinstance(error, CheckoutTimeout) and isinstance(error, OperationalError)
    assert "pool_size 1 + max_overflow 0" in str(error)


def test_pool_false_is_djangos_own_backend(
    mysql_alias: Callable[..., str], observer: Observer, database: str
) -> None:
    alias = mysql_alias(pool=False)
    assert request(alias, Author.objects.using(alias).count) == 0
    assert connections[alias].pool is None
    # Closed, as Django closes it (the server may list it a moment longer).
    wait_for(lambda: observer.sessions_on(database) == [], timeout=5)
    with pytest.raises(ImproperlyConfigured, match="pooling disabled"):
        get_pool(alias)


def test_a_fresh_process_queries_through_the_engine(
    mariadb_server: LocalMariaDB, database: str
) -> None:
    # Nothing imported or connected beforehand, as in a web worker: the
    # demo project's settings with a mysql:// DATABASE_URL.
    script = (
        "import django; django.setup()\n"
        "from django.db import connection\n"
        "from selecto_pool import get_pool\n"
        "with connection.cursor() as cursor:\n"
        "    cursor.execute('SELECT 41 + 1')\n"
        "    print(cursor.fetchone()[0], type(get_pool('default')).__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=demo_environment(mariadb_server.url_for(database)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["42", "MySQLPool"]
