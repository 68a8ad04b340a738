"""Giving a connection back: never blocking, and the session reset on return."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction

import selecto_pool as sp
from selecto_pool.backend.base import DatabaseWrapper
from selecto_pool.backend.cursor import SelectoCursor
from testproject.pgserver import LocalPostgres

from .support.database import Observer, conninfo_of, wrapper_for_settings
from .support.proxy import Proxy

Connection = psycopg.Connection[Any]


def returned_within(seconds: float, give_back: Callable[[], object]) -> bool:
    """Run ``give_back()`` in a thread; whether it returned within ``seconds``.

    Its exception, if it raised in time, is raised here.
    """
    done = threading.Event()
    raised: list[BaseException] = []

    def run() -> None:
        try:
            give_back()
        except BaseException as exc:
            raised.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    finished = done.wait(seconds)
    if raised:
        raise raised[0]
    return finished


def backend_gone(observer: Observer, pid: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not observer.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]
        ):
            return True
        time.sleep(0.01)
    return False


# -- a return never blocks ------------------------------------------------------
def copy_half_read(conn: Any) -> Iterator[object]:
    """A ``COPY ... TO STDOUT`` of which one row was read (psycopg or ORM)."""
    with conn.cursor().copy(
        "COPY (SELECT generate_series(1, 1000000)) TO STDOUT"
    ) as copy:
        copy.read()
        yield copy


def stream_half_read(conn: Connection) -> Iterator[object]:
    rows = conn.cursor().stream("SELECT generate_series(1, 1000000)")
    next(rows)
    yield rows


def pipeline_left_open(conn: Connection) -> Iterator[object]:
    with conn.pipeline() as pipeline:
        conn.execute("SELECT 1")
        pipeline.sync()
        yield pipeline


def pipeline_pending(conn: Connection) -> Iterator[object]:
    with conn.pipeline():
        cursor = conn.execute("SELECT 1")
        yield cursor


@pytest.mark.parametrize(
    "in_progress",
    [copy_half_read, stream_half_read, pipeline_left_open, pipeline_pending],
)
def test_a_connection_returned_mid_operation_is_closed_at_once(
    observer: Observer, in_progress: Callable[[Connection], Iterator[object]]
) -> None:
    pool = sp.start_pool(conninfo_of("default"), pool_size=1, max_overflow=0)
    try:
        conn = sp.checkout(pool)
        pid = conn.info.backend_pid
        operation = in_progress(conn)
        next(operation)  # the borrower is in the middle of it
        started = time.monotonic()
        try:
            assert returned_within(2, lambda: sp.checkin(pool, conn))
            took = time.monotonic() - started
            print(f"\nreturn ({in_progress.__name__}): {took * 1000:.1f} ms")
        finally:
            if not conn.closed:  # stuck (the code before): unblock the thread
                observer.terminate([pid])
        assert conn.closed
        with sp.with_connection(pool) as fresh:
            assert fresh.info.backend_pid != pid
            assert fresh.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
            assert fresh.execute("SELECT 1").fetchone() == (1,)
        assert backend_gone(observer, pid)
    finally:
        sp.stop_pool(pool, timeout=1)


@pytest.mark.django_db(transaction=True)
def test_the_orm_closing_mid_copy_does_not_hang(observer: Observer) -> None:
    connection = connections["default"]
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    operation = copy_half_read(connection)
    next(operation)
    connection.inc_thread_sharing()  # closed from another thread below
    try:
        returned = returned_within(2, connection.close)
    finally:
        connection.dec_thread_sharing()
        observer.terminate([pid])
    if not returned:  # stuck for good (the code before): let teardown go on
        connection.connection = None
    assert returned
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid


@pytest.mark.django_db(transaction=True)
def test_an_iterator_left_open_is_closed_when_its_connection_returns() -> None:
    """``.iterator()`` outside a transaction declares a cursor WITH HOLD."""
    settings_dict = {
        **connections["default"].settings_dict,
        "OPTIONS": {"pool": {"pool_size": 1, "max_overflow": 0, "control": False}},
    }
    wrapper = wrapper_for_settings(settings_dict, "iterator")
    try:
        cursor = wrapper.chunked_cursor()  # what .iterator() fetches with
        cursor.execute("SELECT generate_series(1, 100000)")
        assert len(cursor.fetchmany(10)) == 10
        pid = wrapper.connection.info.backend_pid
        wrapper.close()  # the request ends, the iterator not exhausted

        with wrapper.cursor() as next_borrower:
            next_borrower.execute("SELECT pg_backend_pid()")
            assert next_borrower.fetchone()[0] == pid
            next_borrower.execute("SELECT count(*) FROM pg_cursors")
            assert next_borrower.fetchone()[0] == 0
            cursor.close()  # its first owner lets go late: nothing is sent
            next_borrower.execute("SELECT 1")
            assert next_borrower.fetchone()[0] == 1
    finally:
        wrapper.close()
        wrapper.close_pool()


@pytest.fixture
def proxy(spare_server: LocalPostgres) -> Iterator[Proxy]:
    with Proxy(spare_server.port) as running:
        yield running


@pytest.mark.slow
@pytest.mark.parametrize("left", ["a transaction", "session state to reset"])
def test_a_stalled_network_bounds_the_return_to_connection_timeout(
    proxy: Proxy, spare_server: LocalPostgres, left: str
) -> None:
    pool = sp.start_pool(
        {**spare_server.conninfo(), "port": proxy.port},
        pool_size=1,
        max_overflow=0,
        connection_timeout=2,
        reset="session" if left == "session state to reset" else None,
    )
    try:
        conn = sp.checkout(pool)
        if left == "a transaction":
            conn.autocommit = False
        conn.execute("SELECT 1")
        proxy.latency = 60  # nothing gets through any more
        started = time.monotonic()
        try:
            assert returned_within(4, lambda: sp.checkin(pool, conn))
        finally:
            proxy.latency = 0
            proxy.drop()  # unblocks the code before, which waited for good
        took = time.monotonic() - started
        print(f"\nreturn on a stalled network ({left}): {took:.3f} s")
        assert 2 <= took < 3.5
        assert conn.closed
        assert sp.execute(pool, "SELECT 1").rows == [(1,)]
    finally:
        sp.stop_pool(pool, timeout=1)


# -- the reset option ------------------------------------------------------------
APP_ROLE = "selecto_reset_app"
OTHER_ROLE = "selecto_reset_other"


@pytest.fixture
def roles(observer: Observer) -> Iterator[None]:
    for role in (APP_ROLE, OTHER_ROLE):
        observer.conn.execute(f"DROP ROLE IF EXISTS {role}")
        observer.conn.execute(f"CREATE ROLE {role} NOLOGIN")
    yield
    for role in (APP_ROLE, OTHER_ROLE):
        observer.conn.execute(f"DROP ROLE IF EXISTS {role}")


def orm_wrapper(alias: str, **pool: Any) -> DatabaseWrapper:
    """One connection, ``assume_role`` and a time zone Django must set."""
    settings_dict = {
        **connections["default"].settings_dict,
        "TIME_ZONE": "Asia/Kolkata",
        "OPTIONS": {
            "application_name": "selecto-reset",
            "assume_role": APP_ROLE,
            "pool": {"pool_size": 1, "max_overflow": 0, "control": False, **pool},
        },
    }
    return wrapper_for_settings(settings_dict, alias)


def raw_discard_all(conn: Connection) -> None:
    """A reset psycopg can't see into."""
    conn.pgconn.exec_(b"DISCARD ALL")


RESETS: dict[str, Any] = {
    "session": "session",
    "discard": "discard",
    "callable": lambda conn: conn.execute("DISCARD ALL"),
    "raw callable": raw_discard_all,
}

LEAVE_STATE = [
    "SET search_path TO pg_catalog",
    "SET statement_timeout = 1234",
    "SET TimeZone = 'Pacific/Auckland'",
    "SELECT pg_advisory_lock(4242)",
    "LISTEN selecto_reset_channel",
    "DECLARE leftover CURSOR WITH HOLD FOR SELECT 1",
    "CREATE TEMP TABLE leftover_rows AS SELECT 'secret' AS secret",
    f"SET ROLE {OTHER_ROLE}",
]

SEE_STATE = {
    "role": "SELECT current_user::text",
    "search_path": "SHOW search_path",
    "statement_timeout": "SHOW statement_timeout",
    "TimeZone": "SHOW TimeZone",
    "advisory locks": "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
    " AND pid = pg_backend_pid()",
    "LISTEN": "SELECT count(*) FROM pg_listening_channels()",
    "cursors": "SELECT count(*) FROM pg_cursors",
    "temp table": "SELECT to_regclass('pg_temp.leftover_rows')::text",
}


def session_state(wrapper: DatabaseWrapper) -> dict[str, Any]:
    with wrapper.cursor() as cursor:
        state = {}
        for what, sql in SEE_STATE.items():
            cursor.execute(sql)
            state[what] = cursor.fetchone()[0]
        cursor.execute("SELECT pg_backend_pid()")
        state["backend"] = cursor.fetchone()[0]
    return state


@pytest.mark.parametrize("reset", list(RESETS))
def test_reset_clears_the_session_and_reapplies_djangos_settings(
    roles: None, reset: str
) -> None:
    wrapper = orm_wrapper(f"reset-{reset}", reset=RESETS[reset])
    try:
        fresh = session_state(wrapper)
        assert fresh["role"] == APP_ROLE and fresh["TimeZone"] == "Asia/Kolkata"
        with wrapper.cursor() as cursor:
            for sql in LEAVE_STATE:
                cursor.execute(sql)
        dirty = session_state(wrapper)
        assert dirty["role"] == OTHER_ROLE and dirty["temp table"] is not None
        wrapper.close()  # back to the pool: reset

        assert session_state(wrapper) == fresh  # the same backend, as new
    finally:
        wrapper.close()
        wrapper.close_pool()


def test_assume_role_works_with_a_single_connection(roles: None) -> None:
    """Django's SET ROLE at connect once needed a second connection."""
    wrapper = orm_wrapper("assume-role")
    try:
        assert session_state(wrapper)["role"] == APP_ROLE
    finally:
        wrapper.close()
        wrapper.close_pool()


def prepared_on_server(conn: Connection) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql",
        prepare=False,
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("reset", list(RESETS))
def test_the_statement_cache_follows_each_reset(
    transactional_db: None, reset: str
) -> None:
    pool = sp.start_pool(
        conninfo_of("default"),
        pool_size=1,
        max_overflow=0,
        prepare_threshold=0,
        reset=RESETS[reset],
    )
    query = "SELECT %s::int + 1"
    try:
        with sp.with_connection(pool) as conn:
            assert conn.execute(query, [1]).fetchone() == (2,)
            assert prepared_on_server(conn) == 1
        [cache] = pool.cache_stats()
        with sp.transaction(pool) as conn:
            # Inside a transaction a missing statement could not be retried.
            assert conn.execute(query, [2]).fetchone() == (3,)
            [cache_now] = pool.cache_stats()
            assert prepared_on_server(conn) == cache_now["statements"] == 1
        if reset == "session":  # kept: the second run was a hit
            assert cache_now["hits"] == cache["hits"] + 1
            assert cache_now["misses"] == cache["misses"]
        else:  # dropped and prepared again
            assert cache_now["misses"] == cache["misses"] + 1
    finally:
        sp.stop_pool(pool, timeout=1)


def test_a_reset_that_fails_closes_the_connection(
    observer: Observer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(conn: Connection) -> None:
        raise RuntimeError("a bug in the reset")

    def leaves_a_transaction(conn: Connection) -> None:
        conn.execute("BEGIN")

    for reset in (broken, leaves_a_transaction):
        pool = sp.start_pool(
            conninfo_of("default"), pool_size=1, max_overflow=0, reset=reset
        )
        try:
            with sp.with_connection(pool) as conn:
                pid = conn.info.backend_pid
            assert conn.closed
            with sp.with_connection(pool) as conn:
                assert conn.info.backend_pid != pid
        finally:
            sp.stop_pool(pool, timeout=1)
    assert "a bug in the reset" in caplog.text
    assert "its reset left it INTRANS, not IDLE" in caplog.text


@pytest.mark.django_db(transaction=True, databases=["default", "cached"])
def test_what_a_borrower_set_on_the_psycopg_connection_is_undone() -> None:
    """Stock Django closes its connection at the end of each request, and
    what a borrower set on the psycopg object dies with it. Pooled, a
    ``row_factory`` or ``read_only`` set through the direct API (or on
    ``connection.connection``) would reach the next borrower, the ORM
    included: dict rows, read-only transactions."""
    alias = "cached"  # one connection: the next borrower gets the same one
    with sp.with_connection(alias) as conn:
        conn.row_factory = psycopg.rows.dict_row
        conn.cursor_factory = psycopg.ClientCursor
        conn.read_only = True
        conn.deferrable = True
        conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
    orm = connections[alias]
    try:
        with transaction.atomic(using=alias), orm.cursor() as cursor:
            cursor.execute("SELECT 1, %s::int", [2])
            assert cursor.fetchone() == (1, 2)
            cursor.execute("SHOW transaction_isolation")
            assert cursor.fetchone() == ("read committed",)
            cursor.execute("CREATE TEMPORARY TABLE written (x int)")
    finally:
        orm.close()
    with sp.with_connection(alias) as again:
        assert again is conn
        assert type(again.cursor()) is SelectoCursor


@pytest.mark.parametrize("reset", ["session", "discard"])
def test_a_reset_drops_the_notifications_received_for_the_last_borrower(
    observer: Observer, reset: str
) -> None:
    """``UNLISTEN *`` stops new ones; those psycopg already received while
    the borrower ran its queries would be handed to the next borrower."""
    pool = sp.start_pool(
        conninfo_of("default"), pool_size=1, max_overflow=0, reset=reset
    )
    try:
        with sp.with_connection(pool) as conn:
            conn.execute("LISTEN selecto_reset_notes")
            observer.conn.execute("NOTIFY selecto_reset_notes, 'for the last one'")
            time.sleep(0.1)
            conn.execute("SELECT 1")  # received meanwhile, kept by psycopg
        with sp.with_connection(pool) as again:
            assert again is conn
            assert list(again.notifies(timeout=0.1)) == []
    finally:
        sp.stop_pool(pool, timeout=1)


def test_a_return_interrupted_midway_still_gives_the_connection_back() -> None:
    """KeyboardInterrupt (Ctrl-C in a shell) or SystemExit arriving while a
    connection is cleaned: it propagates, and the pool still has all of its
    connections (it had counted the interrupted one as checked out for good,
    every checkout then timing out)."""

    def interrupted(conn: Connection) -> None:
        raise KeyboardInterrupt

    pool = sp.start_pool(
        conninfo_of("default"),
        pool_size=1,
        max_overflow=0,
        reset=interrupted,
        checkout_timeout=2,
    )
    try:
        conn = sp.checkout(pool)
        with pytest.raises(KeyboardInterrupt):
            sp.checkin(pool, conn)
        assert conn.closed  # its session's state is unknown
        again = sp.checkout(pool)
        assert again.execute("SELECT 1").fetchone() == (1,)
        assert sp.pool_stats(pool).in_use == 1
    finally:
        sp.stop_pool(pool, timeout=1)


def test_a_reset_that_only_builds_a_generator_or_coroutine_fails_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``def reset(conn): yield ...`` or ``async def reset(conn)`` run no SQL
    when called: the session would be handed on as it was, silently."""

    def generator(conn: Connection) -> Iterator[None]:
        conn.execute("RESET ALL")
        yield

    async def coroutine(conn: Connection) -> None:
        conn.execute("RESET ALL")

    for reset in (generator, coroutine):
        pool = sp.start_pool(
            conninfo_of("default"), pool_size=1, max_overflow=0, reset=reset
        )
        try:
            with sp.with_connection(pool) as conn:
                conn.execute("SET search_path TO pg_catalog")
            assert conn.closed
            with sp.with_connection(pool) as conn:
                assert conn.execute("SHOW search_path").fetchone() != ("pg_catalog",)
        finally:
            sp.stop_pool(pool, timeout=1)
    assert "returned a generator" in caplog.text
    assert "returned a coroutine" in caplog.text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (False, None),
        ("off", None),
        ("session", "session"),
        ("discard", "discard"),
        (raw_discard_all, raw_discard_all),
    ],
)
def test_reset_option_values(value: Any, expected: Any) -> None:
    wrapper = wrapper_for_settings(
        {
            **connections["default"].settings_dict,
            "OPTIONS": {"pool": {"reset": value}},
        },
        "reset-values",
    )
    assert wrapper.pool_options.reset == expected


@pytest.mark.parametrize(
    "value", ["everything", "Session", True, 42, lambda: None, lambda a, b: None]
)
def test_invalid_reset_names_the_value_and_the_allowed_ones(value: Any) -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        sp.start_pool("postgres://app:hunter2@127.0.0.1:1/app", reset=value)
    message = str(info.value)
    assert "'reset'" in message and repr(value) in message
    assert "'session', 'discard' or a callable taking the connection" in message
    assert "hunter2" not in message


def test_named_resets_are_the_options_names() -> None:
    from selecto_pool._config.options import RESET_NAMES
    from selecto_pool._conn.reset import NAMED_RESETS

    assert set(NAMED_RESETS) == set(RESET_NAMES)
