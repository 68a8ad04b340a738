"""MySQL pools under faults: killed sessions, a restarted server, leaks, fork()."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connections

import selecto_pool as sp
from selecto_pool import CheckoutTimeout, MySQLPool
from testproject.library.models import Author
from testproject.mariaserver import LocalMariaDB

from ..support import mariadb
from ..support.clients import wait_for
from ..support.mariadb import Observer
from ..support.processes import report_from_fork


@pytest.fixture(scope="module")
def own_server(mariadb_server: LocalMariaDB) -> Iterator[LocalMariaDB]:
    """A server of the module's own, free to be stopped and restarted."""
    with LocalMariaDB() as server:
        mariadb.recreate_database(server, "faults")
        yield server


def session_ids(pool: MySQLPool) -> set[int]:
    """The server's ids of the pool's open connections, by checking them all out."""
    held = [sp.checkout(pool) for _ in range(pool.stats().connections)]
    try:
        return {conn.thread_id() for conn in held}
    finally:
        for conn in held:
            sp.checkin(pool, conn)


def test_killed_connections_are_replaced_at_checkout(
    start_mysql_pool: Callable[..., MySQLPool], database: str, observer: Observer
) -> None:
    pool = start_mysql_pool(pool_size=2, max_overflow=0, health_check_interval=0)
    pool.wait(5)
    killed = session_ids(pool)
    observer.kill(sorted(killed))
    # Each checkout finds its connection dead (EOF on the socket) and takes
    # a new one: no error reaches the caller.
    for _ in range(4):
        assert sp.execute(pool, "SELECT 1").rows == [(1,)]
    assert not killed & set(observer.sessions_on(database))
    assert sp.pool_stats(pool).connections_replaced == 2


def test_health_sweeps_replace_killed_idle_connections(
    start_mysql_pool: Callable[..., MySQLPool], database: str, observer: Observer
) -> None:
    pool = start_mysql_pool(pool_size=2, max_overflow=0, health_check_interval=0.1)
    pool.wait(5)
    killed = set(observer.sessions_on(database))
    observer.kill(sorted(killed))
    # Without any checkout: the maintenance thread finds and replaces them.
    wait_for(lambda: sp.pool_stats(pool).connections_replaced == 2, timeout=10)
    wait_for(lambda: len(observer.sessions_on(database)) == 2, timeout=10)
    assert not killed & set(observer.sessions_on(database))


@pytest.mark.slow
def test_the_pool_recovers_after_a_server_restart(own_server: LocalMariaDB) -> None:
    pool = sp.start_pool(
        own_server.connect_kwargs("faults"),
        adapter="mysql",
        pool_size=2,
        max_overflow=0,
        checkout_timeout=0.5,
    )
    try:
        assert sp.execute(pool, "SELECT 1").rows == [(1,)]
        own_server.stop()
        with pytest.raises(CheckoutTimeout, match="is the database server reachable"):
            sp.execute(pool, "SELECT 1")
        own_server.start()
        back = time.monotonic()
        # The maintenance thread probes every 0.5 s: the next query waits
        # for that, not for a backoff of seconds.
        result = sp.execute(pool, "SELECT 1")
        assert result.rows == [(1,)]
        assert time.monotonic() - back < 3.0
        assert sp.pool_stats(pool).connection_errors >= 1
    finally:
        sp.stop_pool(pool)
        if not own_server.is_running():
            own_server.start()


@pytest.mark.slow
def test_the_engine_recovers_after_a_server_crash(
    own_server: LocalMariaDB, django_db_blocker: Any
) -> None:
    settings_dict = mariadb.engine_settings(
        own_server, "faults", pool={"pool_size": 2, "max_overflow": 0}
    )
    with django_db_blocker.unblock(), mariadb.registered_alias("crash", settings_dict):
        with connections["crash"].cursor() as cursor:
            cursor.execute("SELECT 1")
        connections["crash"].close()
        own_server.kill()  # SIGKILL: no goodbye to anyone
        own_server.start()
        # The idle connections are dead; the first query still succeeds.
        with connections["crash"].cursor() as cursor:
            cursor.execute("SELECT 2")
            assert cursor.fetchone() == (2,)
        connections["crash"].close()


def test_a_leaked_connection_is_reported_with_its_stack(
    start_mysql_pool: Callable[..., MySQLPool], caplog: pytest.LogCaptureFixture
) -> None:
    pool = start_mysql_pool(pool_size=1, leak_detection_threshold=0.1)
    with caplog.at_level(logging.WARNING, "selecto_pool"):
        conn = sp.checkout(pool)
        # Counted, then logged: wait for the log line itself.
        wait_for(lambda: "has not been returned" in caplog.text, timeout=5)
        sp.checkin(pool, conn)
    assert sp.pool_stats(pool).leaks == 1
    assert "test_a_leaked_connection_is_reported_with_its_stack" in caplog.text


def in_child(alias: str, held: Any, pool: MySQLPool) -> dict[str, Any]:
    """Runs in the forked child: what it gets, then what a careless one does."""
    report: dict[str, Any] = {"count": Author.objects.using(alias).count()}
    report["own"] = connections[alias].connection.thread_id()
    connections[alias].close()
    try:
        sp.checkout(pool)
    except sp.PoolClosed as exc:
        report["direct"] = str(exc)
    # What a careless child does: close what it inherited. mysqlclient
    # would send the server a goodbye on the parent's socket.
    held.close()
    pool.close()
    return report


def test_a_forked_child_leaves_the_parents_sessions_alone(
    mysql_alias: Callable[..., str],
    start_mysql_pool: Callable[..., MySQLPool],
    database: str,
    observer: Observer,
) -> None:
    alias = mysql_alias(pool_size=1, max_overflow=0)
    Author.objects.using(alias).create(name="parent")
    # The parent keeps its ORM connection and a direct one checked out
    # across the fork, as a preloading server mid-request would.
    parent_orm = connections[alias].connection.thread_id()
    pool = start_mysql_pool(pool_size=2)
    held = sp.checkout(pool)
    before = set(observer.sessions_on(database))

    report = report_from_fork(lambda: in_child(alias, held, pool))
    try:
        assert report["count"] == 1
        assert report["own"] not in before
        assert "belongs to process" in report["direct"]
        # Every session of the parent is still there, and usable.
        assert before <= set(observer.sessions_on(database))
        cursor = held.cursor()
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
        assert connections[alias].connection.thread_id() == parent_orm
        assert Author.objects.using(alias).count() == 1
        assert sp.execute(pool, "SELECT 2").rows == [(2,)]
    finally:
        sp.checkin(pool, held)
        connections[alias].close()


def test_a_connection_closed_by_its_user_is_replaced(
    start_mysql_pool: Callable[..., MySQLPool],
) -> None:
    pool = start_mysql_pool(pool_size=1, max_overflow=0, checkout_timeout=2)
    conn = sp.checkout(pool)
    conn.close()  # a careless caller
    sp.checkin(pool, conn)
    assert sp.execute(pool, "SELECT 1").rows == [(1,)]
    stats = sp.pool_stats(pool)
    assert (stats.connections, stats.connections_replaced) == (1, 1)
