"""The direct API on MySQL: start_pool(config, adapter="mysql") and the rest."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import selecto_pool as sp
from selecto_pool import MySQLPool, PoolClosed
from selecto_pool._config.options import MAXIMA
from testproject.mariaserver import LocalMariaDB

from ..support.clients import timed_out_checkout, wait_for
from ..support.mariadb import Observer

CHECKOUT_TIMEOUT = 0.5


@pytest.fixture
def pool(start_mysql_pool: Callable[..., MySQLPool]) -> MySQLPool:
    pool = start_mysql_pool(
        pool_size=2, max_overflow=0, checkout_timeout=CHECKOUT_TIMEOUT
    )
    sp.execute(pool, "CREATE TABLE ledger (id int, note varchar(20)) ENGINE=InnoDB")
    return pool


def notes(pool: MySQLPool) -> list[str]:
    return [note for (_, note) in sp.execute(pool, "SELECT * FROM ledger ORDER BY id")]


def test_start_pool_from_a_url_and_execute(
    mariadb_server: LocalMariaDB, database: str
) -> None:
    url = mariadb_server.url_for(database) + "?connect_timeout=3"
    pool = sp.start_pool(url, adapter="mysql", pool_size=1, name="from-url")
    try:
        result = sp.execute(pool, "SELECT %s + 1 AS answer, 'x' AS letter", [41])
        assert result.rows == [(42, "x")]
        assert result.columns == ("answer", "letter")
        assert (result.rowcount, result.status) == (1, None)
        assert pool.name == "from-url" and isinstance(pool, MySQLPool)
    finally:
        sp.stop_pool(pool)


def test_execute_reports_writes(pool: MySQLPool) -> None:
    result = sp.execute(pool, "INSERT INTO ledger VALUES (1, 'a'), (2, %s)", ["b"])
    assert (result.rows, result.rowcount) == ([], 2)
    assert notes(pool) == ["a", "b"]


def test_prepare_is_refused(pool: MySQLPool) -> None:
    with pytest.raises(ValueError, match="prepare nothing"):
        sp.execute(pool, "SELECT 1", prepare=True)
    assert sp.execute(pool, "SELECT 1", prepare=False).rows == [(1,)]


def test_checkout_checkin(pool: MySQLPool) -> None:
    conn = sp.checkout(pool)
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT @@autocommit")
        assert cursor.fetchone() == (1,)
        assert sp.pool_stats(pool).in_use == 1
    finally:
        sp.checkin(pool, conn)
    assert sp.pool_stats(pool).in_use == 0
    with pytest.raises(ValueError, match="returned twice"):
        sp.checkin(pool, conn)


def test_exhausted_pool_times_out_clearly_then_recovers(pool: MySQLPool) -> None:
    held = [sp.checkout(pool), sp.checkout(pool)]
    elapsed, message = timed_out_checkout(pool)
    # It waited checkout_timeout, then gave up: up to 1 s later when the
    # machine is loaded, where a wait that ignored it would last for good.
    assert CHECKOUT_TIMEOUT <= elapsed < CHECKOUT_TIMEOUT + 1.0
    assert (
        pool.name in message and "2 in use of pool_size 2 + max_overflow 0" in message
    )
    sp.checkin(pool, held.pop())
    sp.checkin(pool, sp.checkout(pool))
    sp.checkin(pool, held.pop())
    stats = sp.pool_stats(pool)
    assert (stats.checkout_timeouts, stats.waiting, stats.in_use) == (1, 0, 0)


def test_waiters_are_served_first_come_first_served(pool: MySQLPool) -> None:
    held = [sp.checkout(pool), sp.checkout(pool)]
    served: list[int] = []

    def wait_in_line(number: int) -> None:
        conn = sp.checkout(pool, timeout=10)
        served.append(number)
        sp.checkin(pool, conn)

    threads = []
    for number in range(5):
        thread = threading.Thread(target=wait_in_line, args=(number,))
        thread.start()
        threads.append(thread)
        # Each one queued before the next starts.
        wait_for(lambda n=number: sp.pool_stats(pool).waiting == n + 1, timeout=5)
    sp.checkin(pool, held.pop())
    for thread in threads:
        thread.join(10)
    sp.checkin(pool, held.pop())
    assert served == [0, 1, 2, 3, 4]


def test_transaction_commits_or_rolls_back(pool: MySQLPool) -> None:
    def write(conn: Any) -> str:
        conn.cursor().execute("INSERT INTO ledger VALUES (1, 'committed')")
        return "done"

    assert sp.transaction(pool, write) == "done"

    def write_then_fail(conn: Any) -> None:
        conn.cursor().execute("INSERT INTO ledger VALUES (2, 'lost')")
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        sp.transaction(pool, write_then_fail)
    with sp.transaction(pool) as conn:
        conn.cursor().execute("INSERT INTO ledger VALUES (3, 'also committed')")
    assert notes(pool) == ["committed", "also committed"]


def test_a_transaction_left_open_is_rolled_back_on_return(
    pool: MySQLPool, observer: Observer, database: str
) -> None:
    sp.execute(pool, "INSERT INTO ledger VALUES (1, 'kept')")
    conn = sp.checkout(pool)
    cursor = conn.cursor()
    # SQL in autocommit mode, as a careless caller would: row 1 stays locked
    # until the transaction ends.
    cursor.execute("START TRANSACTION")
    cursor.execute("UPDATE ledger SET note = 'changed' WHERE id = 1")
    sp.checkin(pool, conn)
    assert sp.pool_stats(pool).rollbacks_on_return == 1
    # NOWAIT: an error at once if the row were still locked.
    locked = f"SELECT note FROM `{database}`.ledger WHERE id = 1 FOR UPDATE NOWAIT"
    assert observer.rows(locked) == [("kept",)]


def test_a_result_left_unread_doesnt_poison_the_pool(pool: MySQLPool) -> None:
    """An unbuffered cursor given back mid-result (its rows still coming):
    the connection can't run anything until they are read, so it is closed
    and replaced, not handed to the next caller."""
    import MySQLdb.cursors

    conn = sp.checkout(pool)
    cursor = conn.cursor(MySQLdb.cursors.SSCursor)
    cursor.execute("SELECT SLEEP(0.2), seq FROM seq_1_to_3")
    sp.checkin(pool, conn)
    for _ in range(3):  # whichever connection serves it
        assert sp.execute(pool, "SELECT 8").rows == [(8,)]
    assert sp.pool_stats(pool).connections_replaced == 1


def test_stop_pool_refuses_new_checkouts(pool: MySQLPool) -> None:
    sp.stop_pool(pool, timeout=0.5)
    with pytest.raises(PoolClosed):
        sp.checkout(pool)
    assert sp.pool_stats(pool).closed


@pytest.mark.parametrize("timeout", [1e10, math.inf, math.nan])
def test_a_checkout_timeout_beyond_a_day_is_a_clear_error(
    pool: MySQLPool, timeout: float
) -> None:
    # As on PostgreSQL (tests/test_limits.py), even with a connection idle.
    with pytest.raises(ValueError, match="at most 86400"):
        sp.checkout(pool, timeout=timeout)
    assert sp.execute(pool, "SELECT 1").rows == [(1,)]


@pytest.mark.parametrize("timeout", [1e10, math.inf, math.nan])
def test_stop_pool_with_a_timeout_beyond_a_day_returns(
    pool: MySQLPool, timeout: float
) -> None:
    # As on PostgreSQL (tests/test_limits.py): the wait is cut to what a
    # thread can wait, not handed to threading, which raises.
    assert sp.execute(pool, "SELECT 1").rows == [(1,)]
    started = time.monotonic()
    sp.stop_pool(pool, timeout=timeout)
    assert time.monotonic() - started < 5
    assert sp.pool_stats(pool).closed


def test_overflow_grows_for_waiters_and_shrinks_when_idle(
    start_mysql_pool: Callable[..., MySQLPool], database: str, observer: Observer
) -> None:
    pool = start_mysql_pool(pool_size=1, max_overflow=2, max_idle=0.3)
    held = [sp.checkout(pool) for _ in range(3)]
    assert sp.pool_stats(pool).overflow == 2
    assert len(observer.sessions_on(database)) == 3
    for conn in held:
        sp.checkin(pool, conn)
    # One connection above pool_size closed per max_idle while unused.
    wait_for(lambda: sp.pool_stats(pool).connections == 1, timeout=10)
    wait_for(lambda: len(observer.sessions_on(database)) == 1, timeout=5)


def test_max_lifetime_retires_connections(
    start_mysql_pool: Callable[..., MySQLPool],
) -> None:
    pool = start_mysql_pool(pool_size=1, max_overflow=0, max_lifetime=0.2)
    first = sp.execute(pool, "SELECT CONNECTION_ID()").rows
    time.sleep(0.3)
    assert sp.execute(pool, "SELECT CONNECTION_ID()").rows != first
    assert sp.pool_stats(pool).connections_opened >= 2


def test_execute_returns_tuples_whatever_the_cursor_class(
    mariadb_server: LocalMariaDB, database: str
) -> None:
    import MySQLdb.cursors

    config = {
        **mariadb_server.connect_kwargs(database),
        "cursorclass": MySQLdb.cursors.DictCursor,
    }
    pool = sp.start_pool(config, adapter="mysql", pool_size=1)
    try:
        assert sp.execute(pool, "SELECT 1 AS one").rows == [(1,)]
        with sp.with_connection(pool) as conn:
            cursor = conn.cursor()  # the caller's choice stays the default
            cursor.execute("SELECT 1 AS one")
            assert cursor.fetchone() == {"one": 1}
    finally:
        sp.stop_pool(pool)


def test_the_largest_timeouts_wait_rather_than_fail(
    start_mysql_pool: Callable[..., MySQLPool],
) -> None:
    pool = start_mysql_pool(
        pool_size=1,
        max_overflow=0,
        # The maxima (values above them are refused: tests/test_limits.py).
        checkout_timeout=MAXIMA["checkout_timeout"],
        max_idle=MAXIMA["max_idle"],
    )
    held = sp.checkout(pool)
    served: list[Any] = []
    waiter = threading.Thread(target=lambda: served.append(sp.checkout(pool)))
    waiter.start()
    wait_for(lambda: sp.pool_stats(pool).waiting == 1, timeout=5)
    sp.checkin(pool, held)
    waiter.join(5)
    assert len(served) == 1
    sp.checkin(pool, served[0])
