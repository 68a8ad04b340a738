"""The direct API, without the ORM: start, use, inspect and stop pools."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connections

import selecto_pool as sp
from selecto_pool import CheckoutTimeout, PoolClosed, PoolStartError, SelectoPool

from .support.clients import timed_out_checkout, wait_for
from .support.database import Observer, conninfo_of

CHECKOUT_TIMEOUT = 0.5


@pytest.fixture
def pool(transactional_db: None) -> Iterator[SelectoPool]:
    pool = sp.start_pool(
        conninfo_of("default"),
        pool_size=2,
        max_overflow=0,
        checkout_timeout=CHECKOUT_TIMEOUT,
    )
    sp.execute(pool, "CREATE TABLE IF NOT EXISTS ledger (id int, note text)")
    yield pool
    sp.stop_pool(pool, timeout=1)
    with psycopg.connect(**conninfo_of("default"), autocommit=True) as conn:
        conn.execute("DROP TABLE ledger")


def notes(pool: SelectoPool) -> list[str]:
    return [note for (_, note) in sp.execute(pool, "SELECT * FROM ledger ORDER BY id")]


def test_start_pool_from_a_url_and_execute(transactional_db: None) -> None:
    info = conninfo_of("default")
    url = psycopg.conninfo.make_conninfo(**info)
    pool = sp.start_pool(url, pool_size=1, name="from-url")
    try:
        result = sp.execute(pool, "SELECT %s::int AS answer, 'x' AS letter", [42])
        assert result.rows == [(42, "x")]
        assert result.columns == ("answer", "letter")
        assert list(result) == [(42, "x")] and len(result) == 1
        assert pool.name == "from-url"
    finally:
        sp.stop_pool(pool)


def test_execute_reports_writes(pool: SelectoPool) -> None:
    result = sp.execute(pool, "INSERT INTO ledger VALUES (1, 'a'), (2, 'b')")
    assert (result.rows, result.rowcount, result.status) == ([], 2, "INSERT 0 2")


def test_checkout_checkin(pool: SelectoPool) -> None:
    conn = sp.checkout(pool)
    try:
        assert isinstance(conn, psycopg.Connection)
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert sp.pool_stats(pool).in_use == 1
    finally:
        sp.checkin(pool, conn)
    assert sp.pool_stats(pool).in_use == 0


def test_exhausted_pool_times_out_clearly_then_recovers(pool: SelectoPool) -> None:
    held = [sp.checkout(pool), sp.checkout(pool)]
    elapsed, message = timed_out_checkout(pool)
    # It waited checkout_timeout, then gave up: up to 1 s later when the
    # machine is loaded, where a wait that ignored it would last for good.
    assert CHECKOUT_TIMEOUT <= elapsed < CHECKOUT_TIMEOUT + 1.0
    assert pool.name in message and "pool_size 2" in message
    assert "0 other client(s) waiting" in message
    assert sp.pool_stats(pool).waiting == 0
    sp.checkin(pool, held.pop())
    conn = sp.checkout(pool)
    sp.checkin(pool, conn)
    sp.checkin(pool, held.pop())
    stats = sp.pool_stats(pool)
    assert (stats.checkout_timeouts, stats.waiting, stats.in_use) == (1, 0, 0)


def test_timeout_message_counts_the_other_waiting_clients(pool: SelectoPool) -> None:
    held = [sp.checkout(pool), sp.checkout(pool)]

    def wait_then_return() -> None:
        sp.checkin(pool, sp.checkout(pool, timeout=5.0))

    other = threading.Thread(target=wait_then_return)
    other.start()
    try:
        wait_for(lambda: sp.pool_stats(pool).waiting >= 1, timeout=5)
        with pytest.raises(CheckoutTimeout, match=r"1 other client\(s\) waiting"):
            sp.checkout(pool, timeout=0.2)
    finally:
        sp.checkin(pool, held.pop())
        other.join()
        sp.checkin(pool, held.pop())
    assert sp.pool_stats(pool).waiting == 0


def test_waiters_are_counted_in_the_timeout_message(pool: SelectoPool) -> None:
    held = [sp.checkout(pool), sp.checkout(pool)]

    def wait_in_vain() -> None:
        with pytest.raises(CheckoutTimeout):
            # Still waiting when the checkout below gives up, however late
            # each thread gets the CPU on a loaded machine.
            sp.checkout(pool, timeout=2.0)

    waiter = threading.Thread(target=wait_in_vain)
    waiter.start()
    try:
        wait_for(lambda: sp.pool_stats(pool).waiting >= 1, timeout=5)
        with pytest.raises(CheckoutTimeout, match="1 other client"):
            sp.checkout(pool, timeout=0.2)
    finally:
        waiter.join()
        for conn in held:
            sp.checkin(pool, conn)


def test_transaction_commits(pool: SelectoPool) -> None:
    def write(conn: psycopg.Connection[Any]) -> str:
        conn.execute("INSERT INTO ledger VALUES (1, 'committed')")
        return "done"

    assert sp.transaction(pool, write) == "done"
    assert notes(pool) == ["committed"]


def test_transaction_rolls_back_and_reraises(pool: SelectoPool) -> None:
    def write_then_fail(conn: psycopg.Connection[Any]) -> None:
        conn.execute("INSERT INTO ledger VALUES (1, 'lost')")
        raise LookupError("boom")

    with pytest.raises(LookupError, match="boom"):
        sp.transaction(pool, write_then_fail)
    assert notes(pool) == []
    with pytest.raises(LookupError), sp.transaction(pool) as conn:
        conn.execute("INSERT INTO ledger VALUES (2, 'lost too')")
        raise LookupError
    assert notes(pool) == []
    with sp.transaction(pool) as conn:
        conn.execute("INSERT INTO ledger VALUES (3, 'kept')")
    assert notes(pool) == ["kept"]


def test_with_connection_returns_the_connection_clean(pool: SelectoPool) -> None:
    def leave_transaction_open(conn: psycopg.Connection[Any]) -> int:
        conn.autocommit = False
        conn.execute("INSERT INTO ledger VALUES (1, 'uncommitted')")
        return conn.info.backend_pid

    backend = sp.with_connection(pool, leave_transaction_open)
    assert notes(pool) == []
    with sp.with_connection(pool) as conn:
        assert conn.autocommit and conn.info.transaction_status.name == "IDLE"
    assert sp.pool_stats(pool).rollbacks_on_return == 1
    assert backend > 0


def test_pool_stats_counts(pool: SelectoPool) -> None:
    pool.wait(timeout=5)
    sp.execute(pool, "SELECT 1")
    stats = sp.pool_stats(pool)
    assert (stats.pool_size, stats.max_overflow, stats.connections) == (2, 0, 2)
    assert (stats.idle, stats.in_use, stats.waiting, stats.overflow) == (2, 0, 0, 0)
    assert stats.checkouts >= 2  # the CREATE TABLE and the SELECT
    assert stats.as_dict()["name"] == pool.name


def test_clear_cache_deallocates_prepared_statements(pool: SelectoPool) -> None:
    def prepared(conn: psycopg.Connection[Any]) -> int:
        return conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]

    for _ in range(3):
        with sp.with_connection(pool) as conn:
            conn.execute("SELECT %s::int", [1], prepare=True)
    held = sp.checkout(pool)  # a checked-out connection is cleared on return
    sp.clear_cache(pool)
    sp.checkin(pool, held)
    for _ in range(2):
        with sp.with_connection(pool) as conn:
            assert prepared(conn) == 0
    assert sp.execute(pool, "SELECT %s::int", [7], prepare=True).rows == [(7,)]


def test_stop_pool_drains_checked_out_connections(pool: SelectoPool) -> None:
    conn = sp.checkout(pool)
    returned_at: list[float] = []

    def finish_work() -> None:
        time.sleep(0.3)
        returned_at.append(time.monotonic())
        sp.checkin(pool, conn)

    worker = threading.Thread(target=finish_work)
    worker.start()
    sp.stop_pool(pool, timeout=5)
    stopped_at = time.monotonic()
    worker.join()
    assert returned_at and stopped_at >= returned_at[0]
    assert pool.closed
    with pytest.raises(PoolClosed):
        sp.checkout(pool)


def test_stop_pool_gives_up_after_its_timeout(transactional_db: None) -> None:
    pool = sp.start_pool(conninfo_of("default"), pool_size=1)
    conn = sp.checkout(pool)
    started = time.monotonic()
    sp.stop_pool(pool, timeout=0.3)
    # It waited its timeout, then closed (~0.25 s: the control responder looks
    # up from LISTEN four times a second), all within 1.5 s more on a loaded
    # machine; without the timeout it would wait for good (conn never returns).
    assert 0.3 <= time.monotonic() - started < 0.3 + 1.5
    sp.checkin(pool, conn)  # late: closed instead of pooled
    assert conn.closed


def test_get_pool_shares_the_orm_pool(observer: Observer) -> None:
    from testproject.library.models import Author

    Author.objects.create(name="orm")
    orm_backend = connections["default"].connection.info.backend_pid
    connections["default"].close()
    pool = sp.get_pool("default")
    assert sp.execute("default", "SELECT name FROM library_author").rows == [("orm",)]
    with sp.with_connection("default") as conn:
        backends = {conn.info.backend_pid}
    assert pool is sp.get_pool("default")
    assert orm_backend in set(observer.connections_of("selecto-default"))
    assert backends <= set(observer.connections_of("selecto-default"))


def test_get_pool_of_an_unpooled_alias_is_refused() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="pooling disabled"):
        sp.get_pool("unpooled")


def test_start_pool_reports_the_server_reason_without_the_password(
    transactional_db: None,
) -> None:
    info = {**conninfo_of("default"), "password": "wrong-password-xyz"}
    with pytest.raises(PoolStartError) as excinfo:
        sp.start_pool(info, pool_size=1)
    assert "password authentication failed" in str(excinfo.value)
    assert "wrong-password-xyz" not in str(excinfo.value)
    real = conninfo_of("default")["password"]
    assert real not in str(excinfo.value)


def test_start_pool_with_a_malformed_dsn_does_not_echo_it() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured) as excinfo:
        sp.start_pool("host=x passwordsekrit-value")
    assert "sekrit-value" not in str(excinfo.value)


def test_alias_pool_stopped_is_rebuilt_by_the_orm(transactional_db: None) -> None:
    from testproject.library.models import Author

    old = sp.get_pool("default")
    sp.stop_pool("default")
    assert old.closed
    assert Author.objects.count() == 0
    assert sp.get_pool("default") is not old


def test_a_connection_string_wins_over_the_pool_defaults(
    transactional_db: None,
) -> None:
    info = conninfo_of("default")
    url = psycopg.conninfo.make_conninfo(**info, connect_timeout=17, keepalives_idle=99)
    pool = sp.start_pool(url, pool_size=1, max_overflow=0)
    try:
        with sp.with_connection(pool) as conn:
            params = conn.info.get_parameters()
            assert params["connect_timeout"] == "17"
            assert params["keepalives_idle"] == "99"
    finally:
        sp.stop_pool(pool)


def test_returning_a_connection_twice_or_elsewhere_is_refused(
    pool: SelectoPool,
) -> None:
    conn = sp.checkout(pool)
    sp.checkin(pool, conn)
    idle = sp.pool_stats(pool).idle
    with pytest.raises(ValueError, match="not checked out"):
        sp.checkin(pool, conn)
    assert (sp.pool_stats(pool).idle, sp.pool_stats(pool).in_use) == (idle, 0)
    foreign = sp.checkout("default")
    try:
        with pytest.raises(ValueError, match="not checked out"):
            sp.checkin(pool, foreign)
        assert not foreign.closed
    finally:
        sp.checkin("default", foreign)


def test_start_pool_rejects_what_is_not_a_configuration() -> None:
    with pytest.raises(TypeError, match="got int"):
        sp.start_pool(42)  # type: ignore[arg-type]
