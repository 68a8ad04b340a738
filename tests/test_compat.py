"""Every private name selecto_pool takes from psycopg, psycopg_pool and Django.

One test per name in ``selecto_pool._compat``: the name is there *and* does
what the package relies on, on real objects (connections to the suite's
PostgreSQL, a psycopg_pool pool, Django's own code paths). A release that
renames or changes one fails here by name (``python3 dev.py test --versions
newest`` runs this against the newest releases), and ``_compat.check()``
makes a pool refuse to open with it, naming the library and its version.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import queue
import socket
import time
from collections.abc import Iterator
from typing import Any

import django
import psycopg
import psycopg_pool
import pytest
from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.base.creation import BaseDatabaseCreation
from django.db.backends.postgresql import base as postgresql_base
from django.http import HttpRequest, JsonResponse
from django.test import Client
from django.urls import path

import selecto_pool as sp
from selecto_pool import _compat
from selecto_pool._conn.statements import StatementCache
from selecto_pool.backend.base import DatabaseWrapper
from selecto_pool.backend.cursor import SelectoCursor
from selecto_pool.errors import IncompatibleVersion

from .support.database import conninfo_of

# -- helpers ----------------------------------------------------------------


@pytest.fixture
def conn(django_db_setup: None) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(**conninfo_of("default"), autocommit=True) as conn:
        yield conn


@contextlib.contextmanager
def _maintenance_connection() -> Iterator[psycopg.Connection[Any]]:
    """A connection to the server's ``postgres`` database, not the test one."""
    with psycopg.connect(
        **{**conninfo_of("default"), "dbname": "postgres"}, autocommit=True
    ) as conn:
        yield conn


def _server_statements(conn: psycopg.Connection[Any]) -> int:
    """How many statements the server holds prepared for ``conn``."""
    sql = "SELECT count(*) FROM pg_prepared_statements"
    (count,) = conn.execute(sql, prepare=False).fetchone() or (0,)
    return int(count)


def _with_cache(conn: psycopg.Connection[Any], **settings: Any) -> StatementCache:
    cache = StatementCache(max_bytes=16 * 1024 * 1024)
    _compat.set_prepare_manager(conn, cache)
    conn.prepare_threshold = settings.get("threshold", 0)
    conn.prepared_max = settings.get("size", 10)
    return cache


def _wrapper(alias: str, **settings: Any) -> DatabaseWrapper:
    """A selecto_pool ``DatabaseWrapper`` on the test database, outside DATABASES."""
    settings_dict = {**copy.deepcopy(connections["default"].settings_dict), **settings}
    completed = connections.configure_settings({"default": settings_dict})
    return DatabaseWrapper(completed["default"], alias=alias)


def _closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- psycopg: the connection's PrepareManager (conn._prepared) ----------------


def test_prepared_is_the_manager_psycopg_executes_with(
    conn: psycopg.Connection[Any],
) -> None:
    assert type(_compat.prepare_manager_of(conn)) is _compat.PrepareManager
    cache = _with_cache(conn)
    assert _compat.prepare_manager_of(conn) is cache
    # The connection's settings are the manager's.
    conn.prepare_threshold, conn.prepared_max = 1, 7
    assert (cache.prepare_threshold, cache.prepared_max) == (1, 7)
    for _ in range(3):
        assert conn.execute("SELECT %s::int", [1]).fetchone() == (1,)
    assert (cache.misses, cache.hits) == (1, 1)


def test_prepare_manager_get_tells_psycopg_to_prepare_then_reuse(
    conn: psycopg.Connection[Any],
) -> None:
    cache = _with_cache(conn, threshold=0)
    conn.execute("SELECT %s::int", [1])  # Prepare.SHOULD: psycopg prepares
    assert (cache.misses, cache.hits, _server_statements(conn)) == (1, 0, 1)
    conn.execute("SELECT %s::int", [2])  # Prepare.YES: psycopg reuses it
    assert (cache.misses, cache.hits, _server_statements(conn)) == (1, 1, 1)
    # prepare=False (the stock path) is never prepared, whatever the threshold.
    conn.execute("SELECT %s::text", ["x"], prepare=False)
    assert (cache.misses, _server_statements(conn)) == (1, 1)


def test_maybe_add_to_cache_records_names_of_prepared_statements(
    conn: psycopg.Connection[Any],
) -> None:
    cache = _with_cache(conn, threshold=0)
    for sql in ("SELECT %s::int", "SELECT %s::bigint", "SELECT %s::text"):
        conn.execute(sql, ["1"] if "text" in sql else [1])
    # _names holds psycopg's statement names, one per statement the server has.
    assert len(cache._names) == cache.statements == 3 == _server_statements(conn)
    names = {name.decode() for name in cache._names.values()}
    rows = conn.execute("SELECT name FROM pg_prepared_statements", prepare=False)
    assert names == {name for (name,) in rows}


def test_prepared_max_bounds_the_statements_and_rotate_evicts(
    conn: psycopg.Connection[Any],
) -> None:
    cache = _with_cache(conn, threshold=0, size=2)
    for cast in ("int", "bigint", "text", "numeric"):
        conn.execute(f"SELECT %s::{cast}", ["1"] if cast == "text" else [1])
        assert _server_statements(conn) <= 2
    assert cache.statements == 2 and cache.evictions == 2


def test_validate_and_should_discard_see_commands_that_drop_server_state(
    conn: psycopg.Connection[Any],
) -> None:
    cache = _with_cache(conn, threshold=0)
    conn.execute("SELECT %s::int", [1])
    assert cache.statements == 1
    # Run the stock way, then seen through validate() and _should_discard().
    conn.execute("DEALLOCATE ALL", prepare=False)
    assert (cache.invalidations, cache.statements) == (1, 0)
    conn.execute("SELECT %s::int", [1])  # prepared anew, not "already exists"
    assert (cache.misses, _server_statements(conn)) == (2, 1)


def test_clear_is_what_psycopg_calls_on_rollback(
    conn: psycopg.Connection[Any],
) -> None:
    conn.prepare_threshold = 0
    conn.autocommit = False
    conn.execute("SELECT %s::int", [1])
    conn.rollback()  # psycopg's own manager forgets everything here...
    assert _server_statements(conn) == 0
    conn.rollback()
    # ...ours keeps statements, which survive a rollback in PostgreSQL.
    cache = _with_cache(conn, threshold=0)
    conn.execute("SELECT %s::int", [1])
    conn.rollback()
    assert cache.statements == 1 == _server_statements(conn)
    conn.rollback()
    conn.execute("SELECT %s::int", [2])
    assert (cache.misses, cache.hits) == (1, 1)


# -- psycopg: the cursor's rowcount slot (Cursor._rowcount) -------------------


def test_rowcount_slot_is_what_rowcount_returns(conn: psycopg.Connection[Any]) -> None:
    cursor = conn.execute("SELECT generate_series(1, 3)")
    assert cursor.rowcount == 3
    _compat.set_rowcount(cursor, 7)
    assert cursor.rowcount == 7


# -- psycopg_pool: conn._pool, conn._expire_at, AddConnection -----------------


@pytest.fixture
def plain_pool(django_db_setup: None) -> Iterator[psycopg_pool.ConnectionPool[Any]]:
    """psycopg_pool's own pool, as the package subclasses it."""
    pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
        kwargs=conninfo_of("default"),
        min_size=1,
        max_size=1,
        max_lifetime=60,
        open=False,
    )
    yield pool
    pool.close()


def test_pool_of_is_the_pool_while_checked_out_and_none_when_idle(
    plain_pool: psycopg_pool.ConnectionPool[Any], conn: psycopg.Connection[Any]
) -> None:
    assert _compat.pool_of(conn) is None  # never pooled
    plain_pool.open(wait=True)
    pooled = plain_pool.getconn()
    assert _compat.pool_of(pooled) is plain_pool
    plain_pool.putconn(pooled)
    assert _compat.pool_of(pooled) is None


def test_take_ready_takes_an_idle_connection_and_never_waits_or_grows(
    plain_pool: psycopg_pool.ConnectionPool[Any],
) -> None:
    plain_pool.open(wait=True)
    taken = _compat.take_ready(plain_pool)
    assert taken is not None and _compat.pool_of(taken) is plain_pool
    assert plain_pool.get_stats()["pool_available"] == 0
    # None idle: None at once, nobody queued, no connection opened.
    assert _compat.take_ready(plain_pool) is None
    stats = plain_pool.get_stats()
    assert stats["pool_size"] == 1 and stats.get("requests_waiting", 0) == 0
    plain_pool.putconn(taken)
    assert plain_pool.get_stats()["pool_available"] == 1


def test_atake_ready_takes_an_idle_connection_of_an_async_pool_and_never_waits(
    django_db_setup: None,
) -> None:
    async def scenario() -> None:
        pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
            kwargs=conninfo_of("default"), min_size=1, max_size=2, open=False
        )
        await pool.open(wait=True)
        try:
            taken = await _compat.atake_ready(pool)
            assert taken is not None and _compat.pool_of(taken) is pool
            assert await _compat.atake_ready(pool) is None
            await asyncio.sleep(0.2)  # a growing pool would open one now
            stats = pool.get_stats()
            assert stats["pool_size"] == 1 and stats.get("requests_waiting", 0) == 0
            await pool.putconn(taken)
            assert pool.get_stats()["pool_available"] == 1
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_expire_at_is_the_max_lifetime_deadline_psycopg_pool_enforces(
    plain_pool: psycopg_pool.ConnectionPool[Any],
) -> None:
    opened_after = time.monotonic()
    plain_pool.open(wait=True)
    pooled = plain_pool.getconn()
    deadline = _compat.expires_at(pooled)
    # psycopg_pool shortens max_lifetime (60 s) by up to 5 % of jitter.
    assert opened_after + 60 * 0.94 < deadline <= time.monotonic() + 60
    # Past the deadline, psycopg_pool closes the connection when returned.
    pooled._expire_at = time.monotonic() - 1
    plain_pool.putconn(pooled)
    assert pooled.closed


def test_expire_at_missing_is_an_incompatible_version(
    conn: psycopg.Connection[Any],
) -> None:
    with pytest.raises(IncompatibleVersion) as raised:
        _compat.expires_at(conn)  # never pooled: psycopg_pool never set it
    assert f"psycopg_pool {psycopg_pool.__version__}" in str(raised.value)


class _RecordingPool(psycopg_pool.ConnectionPool[Any]):
    """psycopg_pool's pool, telling which tasks it schedules."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.scheduled: queue.Queue[tuple[Any, float]] = queue.Queue()
        super().__init__(*args, **kwargs)

    def schedule_task(self, task: Any, delay: float) -> None:
        self.scheduled.put((task, delay))
        if not isinstance(task, _compat.AddConnection):
            super().schedule_task(task, delay)

    def next_retry(self) -> Any:
        seen = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                task, delay = self.scheduled.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(task, _compat.AddConnection) and delay > 0:
                return task
            seen.append(type(task).__name__)
        pytest.fail(f"no AddConnection retry scheduled; scheduled: {seen}")


def test_add_connection_is_what_psycopg_pool_schedules_to_retry_a_connect() -> None:
    pool = _RecordingPool(
        f"host=127.0.0.1 port={_closed_port()} connect_timeout=2",
        min_size=1,
        max_size=1,
        open=False,
    )
    try:
        pool.open()
        retry = pool.next_retry()
        # The pool's reconnect probe runs the task itself, at once: psycopg_pool
        # tries again, and schedules the next retry the same way.
        pool.run_task(retry)
        assert pool.next_retry() is not retry
    finally:
        pool.close(timeout=1)


class _AsyncRecordingPool(psycopg_pool.AsyncConnectionPool[Any]):
    """psycopg_pool's async pool, keeping the connection retries it schedules."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.retries: asyncio.Queue[Any] = asyncio.Queue()
        super().__init__(*args, **kwargs)

    async def schedule_task(self, task: Any, delay: float) -> None:
        if isinstance(task, _compat.AsyncAddConnection) and delay > 0:
            self.retries.put_nowait(task)
        else:
            await super().schedule_task(task, delay)


def test_async_add_connection_is_what_the_async_pool_schedules_to_retry() -> None:
    async def scenario() -> None:
        pool = _AsyncRecordingPool(
            f"host=127.0.0.1 port={_closed_port()} connect_timeout=2",
            min_size=1,
            max_size=1,
            open=False,
        )
        try:
            await pool.open()
            retry = await asyncio.wait_for(pool.retries.get(), 15)
            # The async pool's reconnect probe awaits the task itself: it
            # tries again, and schedules the next retry the same way.
            await retry.run()
            assert await asyncio.wait_for(pool.retries.get(), 15) is not retry
        finally:
            await pool.close(timeout=1)

    asyncio.run(scenario())


def test_async_stop_worker_ends_an_async_pool_worker() -> None:
    async def scenario() -> None:
        pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
            "", min_size=1, open=False
        )
        tasks: asyncio.Queue[Any] = asyncio.Queue()
        worker = asyncio.create_task(psycopg_pool.AsyncConnectionPool.worker(tasks))
        tasks.put_nowait(_compat.AsyncStopWorker(pool))
        await asyncio.wait_for(worker, 5)

    asyncio.run(scenario())


# -- Django -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_django_switches_autocommit_through_set_autocommit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bool] = []
    override = DatabaseWrapper._set_autocommit

    def counted(self: DatabaseWrapper, autocommit: bool) -> None:
        calls.append(autocommit)
        override(self, autocommit)

    monkeypatch.setattr(DatabaseWrapper, "_set_autocommit", counted)
    connection = connections["default"]
    connection.close()
    with transaction.atomic(using="default"):
        assert connection.connection.autocommit is False
    assert connection.connection.autocommit is True
    assert False in calls and calls[-1] is True


@pytest.mark.django_db(transaction=True, databases=["default", "small"])
def test_django_clones_and_destroys_test_databases_through_the_private_hooks() -> None:
    creation = connections["default"].creation
    clone_name = creation.get_test_db_clone_settings("compat")["NAME"]
    # Another alias on the same database holds idle connections: without
    # _clone_test_db, CREATE DATABASE ... TEMPLATE fails ("being accessed").
    connections.close_all()
    connections["small"].ensure_connection()
    connections["small"].close()
    small_pool = sp.get_pool("small")
    assert small_pool.stats().idle >= 1
    on_clone = _wrapper("compat_clone", NAME=clone_name)
    try:
        creation.clone_test_db(suffix="compat", verbosity=0)
        assert small_pool.closed
        # A pool with idle connections to the clone: without _destroy_test_db,
        # DROP DATABASE fails the same way.
        on_clone.ensure_connection()
        on_clone.close()
        clone_pool = on_clone.pool
        assert clone_pool is not None and clone_pool.stats().idle >= 1
        creation.destroy_test_db(verbosity=0, suffix="compat")
        assert clone_pool.closed
        with _maintenance_connection() as conn:
            exists = "SELECT count(*) FROM pg_database WHERE datname = %s"
            assert conn.execute(exists, [clone_name]).fetchone() == (0,)
    finally:
        on_clone.close_pool()
        with _maintenance_connection() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{clone_name}" WITH (FORCE)')


@pytest.mark.django_db(transaction=True)
def test_django_takes_connections_from_pool_and_closes_it_with_close_pool() -> None:
    connection = connections["default"]
    connection.ensure_connection()
    pool = sp.get_pool("default")
    assert _compat.pool_of(connection.connection) is pool
    connection.close()
    # Django closes the pool when connections must pick up a new time zone.
    connection.ensure_timezone()
    assert pool.closed
    connection.ensure_connection()
    assert _compat.pool_of(connection.connection) is sp.get_pool("default")
    assert sp.get_pool("default") is not pool


@pytest.mark.django_db(transaction=True)
def test_configure_hook_sets_up_each_pooled_connection_as_django_would() -> None:
    # Django runs _configure_connection only for unpooled connections; the
    # pool runs it on each new one: the alias's time zone, the assumed role.
    wrapper = _wrapper("compat_tz", TIME_ZONE="Asia/Tokyo")
    try:
        with wrapper.cursor() as cursor:
            cursor.execute("SHOW TIME ZONE")
            assert cursor.fetchone() == ("Asia/Tokyo",)
        assert _compat.pool_of(wrapper.connection) is wrapper.pool
    finally:
        wrapper.close()
        wrapper.close_pool()


@pytest.mark.django_db(transaction=True)
def test_cursor_mixin_gives_the_orm_cursor_callproc() -> None:
    with connections["default"].cursor() as cursor:
        assert isinstance(cursor.cursor, SelectoCursor)
        assert isinstance(cursor.cursor, postgresql_base.CursorMixin)
        cursor.callproc("lower", ["ABC"])
        assert cursor.fetchone() == ("abc",)


def _transactions(request: HttpRequest) -> JsonResponse:
    """Which aliases the request runs in a transaction on."""
    aliases = ("default", "small")
    return JsonResponse(
        {alias: connections[alias].in_atomic_block for alias in aliases}
    )


def _transactions_exempt(request: HttpRequest) -> JsonResponse:
    return _transactions(request)


_compat.non_atomic_for_every_database(_transactions_exempt)

urlpatterns = [
    path("atomic", _transactions),
    path("exempt", _transactions_exempt),
]


@pytest.mark.django_db(transaction=True, databases=["default", "small"])
def test_non_atomic_for_every_database_exempts_a_view_from_atomic_requests(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.ROOT_URLCONF = __name__
    for alias in ("default", "small"):
        monkeypatch.setitem(connections.settings[alias], "ATOMIC_REQUESTS", True)
    client = Client()
    assert client.get("/atomic").json() == {"default": True, "small": True}
    assert client.get("/exempt").json() == {"default": False, "small": False}


# -- _compat.check(): fails loudly, naming the library and its version ---------

_PSYCOPG = f"psycopg {psycopg.__version__}"
_POOL = f"psycopg_pool {psycopg_pool.__version__}"
_DJANGO = f"Django {django.__version__}"

#: (what the message names, the owner, the name) for every name check() checks.
_CHECKED = [
    *(
        (_PSYCOPG, _compat.PrepareManager, name)
        for name in (
            "get",
            "maybe_add_to_cache",
            "validate",
            "clear",
            "_should_discard",
            "_rotate",
            "maintain_gen",
            "key",
            "prepared_max",
        )
    ),
    (_PSYCOPG, psycopg.Cursor, "_rowcount"),
    (_POOL, psycopg_pool.ConnectionPool, "schedule_task"),
    (_POOL, psycopg_pool.ConnectionPool, "run_task"),
    (_POOL, psycopg_pool.ConnectionPool, "_get_ready_connection"),
    (_POOL, _compat.AddConnection, "run"),
    (_POOL, psycopg_pool.AsyncConnectionPool, "schedule_task"),
    (_POOL, psycopg_pool.AsyncConnectionPool, "run_task"),
    (_POOL, psycopg_pool.AsyncConnectionPool, "_get_ready_connection"),
    (_POOL, _compat.AsyncAddConnection, "run"),
    (_DJANGO, BaseDatabaseWrapper, "_set_autocommit"),
    (_DJANGO, BaseDatabaseCreation, "_clone_test_db"),
    (_DJANGO, BaseDatabaseCreation, "_destroy_test_db"),
    (_DJANGO, postgresql_base.DatabaseWrapper, "pool"),
    (_DJANGO, postgresql_base.DatabaseWrapper, "close_pool"),
    (_DJANGO, postgresql_base.DatabaseWrapper, "_configure_connection"),
    (_DJANGO, postgresql_base.DatabaseWrapper, "_configure_role"),
]


def _remove(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> None:
    """Take ``name`` away from ``owner`` for the test, as a release might."""
    if isinstance(owner, type):
        # From the class that defines it (for a name inherited by ``owner``).
        owner = next(klass for klass in owner.__mro__ if name in vars(klass))
    monkeypatch.delattr(owner, name)


@pytest.fixture
def unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a new process: nothing checked yet."""
    monkeypatch.setattr(_compat, "_passed", set())


def test_check_passes_with_the_installed_versions(unchecked: None) -> None:
    _compat.check(django=True)
    assert _compat._passed == {"psycopg", "django"}


@pytest.mark.parametrize(
    ("named", "owner", "name"),
    _CHECKED,
    ids=[f"{owner.__name__}.{name}" for _, owner, name in _CHECKED],
)
def test_check_names_the_library_version_and_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, unchecked: None, named: str, owner: Any, name: str
) -> None:
    _remove(monkeypatch, owner, name)
    with pytest.raises(IncompatibleVersion) as raised:
        _compat.check(django=True)
    assert f"{named}: {owner.__name__}.{name}" in str(raised.value)
    with pytest.raises(IncompatibleVersion):  # not remembered as passed
        _compat.check(django=True)


def test_check_names_prepare_manager_state_and_prepare_members(
    monkeypatch: pytest.MonkeyPatch, unchecked: None
) -> None:
    # _names is set in PrepareManager.__init__, Prepare is an enum: both are
    # replaced where check() looks, not for the connections of other pools.
    class PrepareManager(_compat.PrepareManager):
        def __init__(self) -> None:
            pass

    monkeypatch.setattr(_compat, "PrepareManager", PrepareManager)
    monkeypatch.setattr(_compat, "Prepare", enum.IntEnum("Prepare", "NO YES"))
    with pytest.raises(IncompatibleVersion) as raised:
        _compat.check()
    assert f"{_PSYCOPG}: PrepareManager._names" in str(raised.value)
    assert f"{_PSYCOPG}: PrepareManager._to_flush" in str(raised.value)
    assert f"{_PSYCOPG}: Prepare.SHOULD/YES" in str(raised.value)


def test_check_names_cursor_mixin(
    monkeypatch: pytest.MonkeyPatch, unchecked: None
) -> None:
    monkeypatch.delattr(postgresql_base, "CursorMixin")
    with pytest.raises(IncompatibleVersion, match=f"{_DJANGO}: .*CursorMixin"):
        _compat.check(django=True)


def test_a_pool_does_not_open_with_an_incompatible_psycopg(
    monkeypatch: pytest.MonkeyPatch, unchecked: None, django_db_setup: None
) -> None:
    monkeypatch.delattr(_compat.PrepareManager, "validate")
    with pytest.raises(IncompatibleVersion, match=f"{_PSYCOPG}: .*validate"):
        sp.start_pool(conninfo_of("default"), pool_size=1)


@pytest.mark.django_db(transaction=True)
def test_the_orm_does_not_build_a_pool_with_an_incompatible_django(
    monkeypatch: pytest.MonkeyPatch, unchecked: None
) -> None:
    monkeypatch.delattr(BaseDatabaseCreation, "_clone_test_db")
    wrapper = _wrapper("compat_old_django")
    try:
        with pytest.raises(IncompatibleVersion, match=f"{_DJANGO}: .*_clone_test_db"):
            wrapper.ensure_connection()
    finally:
        wrapper.close_pool()


# -- a fixed bug: clear_cache() is not a checkout -----------------------------


def test_clear_cache_deallocates_idle_connections_without_counting_checkouts(
    django_db_setup: None,
) -> None:
    pool = sp.start_pool(conninfo_of("default"), pool_size=2, max_overflow=0)
    try:
        held = [sp.checkout(pool), sp.checkout(pool)]
        for conn in held:
            conn.execute("SELECT %s::int", [1], prepare=True)
            assert _server_statements(conn) == 1
        for conn in held:
            sp.checkin(pool, conn)
        before = sp.pool_stats(pool)
        assert (before.idle, before.cache_statements) == (2, 2)
        sp.clear_cache(pool)
        after = sp.pool_stats(pool)
        assert (after.checkouts, after.in_use) == (before.checkouts, 0)
        assert after.cache_statements == 0
        held = [sp.checkout(pool), sp.checkout(pool)]
        assert [_server_statements(conn) for conn in held] == [0, 0]
        for conn in held:
            sp.checkin(pool, conn)
    finally:
        sp.stop_pool(pool, timeout=1)
