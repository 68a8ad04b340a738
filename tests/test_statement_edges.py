"""The statement cache at the edges: huge statements, memory, schema changes."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections, transaction

import selecto_pool as sp
from selecto_pool.backend.base import DatabaseWrapper
from testproject.library.models import Author

from .support.database import Observer, wrapper_with_pool
from .support.statements import every_connection, server_memory

MiB = 2**20


@pytest.mark.django_db(databases=["cached"], transaction=True)
def test_more_parameters_than_the_protocol_carries_run_the_stock_way() -> None:
    authors = Author.objects.using("cached")
    first, second, _ = authors.bulk_create(Author(name=f"a{i}") for i in range(3))
    # libpq sends 65,535 parameters at most (Django's stock cursor inlines them).
    ids = [first.pk, second.pk, *range(-65_534, 0)]
    assert authors.filter(id__in=ids).count() == 2
    with transaction.atomic(using="cached"):
        assert authors.filter(id__in=ids).count() == 2
        assert authors.count() == 3  # the transaction goes on


@pytest.mark.django_db(databases=["cached"], transaction=True)
def test_executemany_with_more_parameters_than_the_protocol_carries() -> None:
    Author.objects.using("cached").bulk_create(Author(name=f"a{i}") for i in range(3))
    many = 65_536
    update = (
        f"UPDATE library_author SET name = %s WHERE id IN ({', '.join(['%s'] * many)})"
    )
    first, second = Author.objects.using("cached").order_by("pk")[:2]
    rows = [
        ["renamed", first.pk, *range(-many, -1)],
        ["renamed too", second.pk, *range(-many, -1)],
    ]
    with transaction.atomic(using="cached"), connections["cached"].cursor() as cursor:
        cursor.executemany(update, rows)
        assert cursor.rowcount == 2
    names = Author.objects.using("cached").order_by("pk").values_list("name", flat=True)
    assert list(names) == ["renamed", "renamed too", "a2"]


@pytest.mark.django_db(databases=["cached"], transaction=True)
def test_a_parameter_psycopg_cannot_send_leaves_no_savepoint_behind() -> None:
    """Refused before anything is sent (a value psycopg can't adapt, a NUL
    byte): the transaction goes on, as with the stock cursor, and holds no
    savepoint of the pool's (one per error, piling up in a loop)."""
    with transaction.atomic(using="cached"), connections["cached"].cursor() as cursor:
        for value in (object(), "nul \x00 byte"):
            with pytest.raises(DatabaseError):
                cursor.execute("SELECT %s::text /* never verified */", [value])
        cursor.execute("SELECT count(*) FROM library_author")  # goes on
        with pytest.raises(DatabaseError, match="does not exist"):
            cursor.execute("RELEASE SAVEPOINT selecto_pool_probe")
        transaction.set_rollback(True, using="cached")


def in_list_sweep(wrapper: DatabaseWrapper, sizes: range, runs: int) -> None:
    """The ORM's ``filter(id__in=...)`` of each size, ``runs`` times each."""
    with wrapper.cursor() as cursor:
        for size in sizes:
            query = Author.objects.filter(id__in=range(1, size + 1)).values("id")
            sql, params = query.query.sql_with_params()
            for _ in range(runs):
                cursor.execute(sql, params)
                cursor.fetchall()


@pytest.mark.slow
@pytest.mark.django_db(databases=["default"], transaction=True)
def test_in_lists_keep_server_memory_bounded_with_the_defaults() -> None:
    # The cache's options at their defaults, on a single connection.
    wrapper = wrapper_with_pool(
        {"pool_size": 1, "max_overflow": 0, "control": False}, "sweep"
    )
    try:
        # 101 shapes of 400 to 1000 ids, each run past psycopg's fifth
        # prepared execution, when PostgreSQL adds a generic plan.
        in_list_sweep(wrapper, range(400, 1001, 6), runs=11)
        memory = server_memory(wrapper.connection)
        stats = sp.pool_stats(wrapper.pool)
    finally:
        wrapper.close()
        wrapper.close_pool()
    assert stats.cache_statements >= 10  # the cache was used, not bypassed
    assert memory <= 32 * MiB, f"{memory / MiB:.1f} MiB"


@pytest.mark.django_db(databases=["cached"], transaction=True)
def test_a_statement_failing_at_its_first_prepared_run_leaves_no_copy() -> None:
    # psycopg forgets such a statement and prepares it afresh (a new name)
    # the next time: each failure would leave one more on the server.
    with connections["cached"].cursor() as cursor:
        for _ in range(8):
            with pytest.raises(DatabaseError, match="division by zero"):
                cursor.execute("SELECT 100 / %s AS ratio", [0])
            cursor.execute("SELECT %s::int AS ok", [1])
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ["%AS ratio"],
        )
        assert cursor.fetchone() == (0,)


@pytest.mark.django_db(databases=["cached"], transaction=True)
def test_remembered_decisions_keep_no_sql_text() -> None:
    padding = " " * 100_000

    def run_distinct_statements(first: int, count: int) -> None:
        with connections["cached"].cursor() as cursor:
            for number in range(first, first + count):
                cursor.execute(f"SELECT %s::int + {number}{padding}", [1])

    run_distinct_statements(0, 10)  # imports, psycopg's caches: warmed up
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        run_distinct_statements(10, 200)  # 20 MB of SQL text
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    retained = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert retained < 2 * MiB, f"{retained / MiB:.1f} MiB retained"


@pytest.fixture
def stale_types(observer: Observer) -> Iterator[Callable[[], None]]:
    """A varchar column that another session makes an int (as a deploy would)."""
    observer.conn.execute("CREATE TABLE retyped (code varchar, n int)")
    observer.conn.execute("INSERT INTO retyped VALUES ('42', 7)")
    yield lambda: observer.conn.execute(
        "ALTER TABLE retyped ALTER code TYPE int USING code::int"
    )
    observer.conn.execute("DROP TABLE retyped")


def prepare_everywhere(sql: str) -> int:
    """Run ``sql`` on every idle connection of "default" until it is prepared."""
    with every_connection(sp.get_pool("default")) as held:
        for conn in held:
            for _ in range(7):  # past the process-wide threshold of 5
                assert conn.cursor().execute(sql, ["42"]).fetchall() == [(7,)]
            prepared = conn.execute(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement = %s",
                [sql.replace("%s", "$1")],
            ).fetchone()
            assert prepared == (1,)
        return len(held)


def runs_in_atomic(
    sql: str, runs: int, setup: str | None = None
) -> tuple[int, set[int]]:
    """``sql`` in ``runs`` atomic blocks, each on the pool's next connection."""
    succeeded, backends = 0, set()
    for _ in range(runs):
        try:
            atomic = transaction.atomic(using="default")
            with atomic, connections["default"].cursor() as cursor:
                if setup:
                    cursor.execute(setup)
                cursor.execute("SELECT pg_backend_pid()")
                backends.add(cursor.fetchone()[0])
                cursor.execute(sql, ["42"])
                assert cursor.fetchall() == [(7,)]
            succeeded += 1
        except DatabaseError:
            pass
        connections["default"].close()  # back to the pool: the next one comes
    return succeeded, backends


@pytest.mark.django_db(databases=["default"], transaction=True)
def test_a_column_retyped_by_another_session_fails_once_per_process(
    stale_types: Callable[[], None],
) -> None:
    read = "SELECT n FROM retyped WHERE code = %s"
    held = prepare_everywhere(read)
    assert held >= 3
    stale_types()
    # The first run fails: its transaction is aborted before anything can be
    # retried. The decision is then dropped for the whole process, and the
    # statement's copies on the other connections are not run unguarded.
    succeeded, backends = runs_in_atomic(read, 4)
    assert succeeded == 3
    assert len(backends) >= 3
    # Outside a transaction, every run succeeds.
    with every_connection(sp.get_pool("default")) as conns:
        for conn in conns:
            assert conn.cursor().execute(read, ["42"]).fetchall() == [(7,)]


@pytest.fixture
def other_schema(observer: Observer) -> Iterator[None]:
    """public.twin has a varchar code, elsewhere.twin an int one."""
    observer.conn.execute("CREATE TABLE twin (code varchar, n int)")
    observer.conn.execute("INSERT INTO twin VALUES ('42', 7)")
    observer.conn.execute("CREATE SCHEMA elsewhere")
    observer.conn.execute("CREATE TABLE elsewhere.twin (code int, n int)")
    observer.conn.execute("INSERT INTO elsewhere.twin VALUES (42, 7)")
    yield
    observer.conn.execute("DROP TABLE twin")
    observer.conn.execute("DROP SCHEMA elsewhere CASCADE")


@pytest.mark.django_db(databases=["default"], transaction=True)
def test_a_search_path_switch_to_other_column_types_fails_once_per_process(
    other_schema: None,
) -> None:
    read = "SELECT n FROM twin WHERE code = %s"
    prepare_everywhere(read)
    setup = "SET LOCAL search_path TO elsewhere, public"
    succeeded, backends = runs_in_atomic(read, 4, setup)
    assert succeeded == 3
    assert len(backends) >= 3
    with every_connection(sp.get_pool("default")) as conns:
        for conn in conns:
            conn.execute("SET search_path TO elsewhere, public")
            try:
                assert conn.cursor().execute(read, ["42"]).fetchall() == [(7,)]
            finally:
                conn.execute("RESET search_path")


@pytest.mark.django_db(databases=["default"], transaction=True)
def test_a_result_type_changed_by_another_session_fails_once_per_process(
    observer: Observer,
) -> None:
    observer.conn.execute("CREATE TABLE widened (code varchar, n int)")
    observer.conn.execute("INSERT INTO widened VALUES ('42', 7)")
    try:
        read = "SELECT n FROM widened WHERE code = %s"
        prepare_everywhere(read)
        observer.conn.execute("ALTER TABLE widened ALTER n TYPE bigint")
        # "cached plan must not change result type", once: not on every
        # connection that has the statement prepared.
        succeeded, backends = runs_in_atomic(read, 4)
        assert succeeded == 3
        assert len(backends) >= 3
    finally:
        observer.conn.execute("DROP TABLE widened")


@pytest.mark.parametrize("value", [0, -1, 1025, "16MB", 2.5, True, None])
def test_a_bad_cache_memory_names_key_value_and_allowed(value: Any) -> None:
    wrapper = wrapper_with_pool({"prepared_statement_cache_mib": value}, "bad")
    with pytest.raises(ImproperlyConfigured) as info:
        _ = wrapper.pool_options
    message = str(info.value)
    assert "'prepared_statement_cache_mib'" in message and repr(value) in message
    assert "an integer >= 1, at most 1024" in message


def test_cache_memory_from_a_url_query_string() -> None:
    wrapper = wrapper_with_pool({}, "url")
    wrapper.settings_dict["OPTIONS"]["prepared_statement_cache_mib"] = "64"
    assert wrapper.pool_options.prepared_statement_cache_mib == 64


def test_numbers_keep_psycopg_binarys_c_dumpers(transactional_db: None) -> None:
    if psycopg.pq.__impl__ != "binary":
        pytest.skip("psycopg-binary is not installed")
    with sp.with_connection("default") as conn:
        transformer = psycopg.adapt.Transformer(conn)
        for value in (30_000, 2**40, 2**70):
            for fmt in psycopg.adapt.PyFormat:
                dumper = transformer.get_dumper(value, fmt)
                assert type(dumper).__module__.startswith("psycopg_binary")
        assert conn.execute("SELECT %s + %s", (30_000, 30_000)).fetchone() == (60_000,)
