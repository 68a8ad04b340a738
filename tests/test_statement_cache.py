"""The prepared-statement cache: prepared, counted, bounded, and invisible."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.db import (
    IntegrityError,
    InternalError,
    NotSupportedError,
    connections,
    transaction,
)
from django.db.models.expressions import RawSQL

import selecto_pool as sp
from selecto_pool.backend.cursor import SelectoCursor
from testproject.library.models import Author

from .support.database import Observer, conninfo_of


def server_statements(alias: str) -> list[str]:
    """pg_prepared_statements of the alias's single pooled connection."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [statement for (statement,) in cursor.fetchall()]


def authors_named(name: str) -> list[str]:
    return list(
        Author.objects.using("cached").filter(name=name).values_list("name", flat=True)
    )


@pytest.mark.django_db(databases=["cached"], transaction=True)
def test_statements_are_prepared_after_the_threshold_and_hit() -> None:
    Author.objects.using("cached").create(name="Le Guin")

    def newest_named(name: str) -> list[str]:
        # A statement no other test runs: the threshold counts per process.
        query = Author.objects.using("cached").filter(name=name).order_by("-pk")
        return list(query.values_list("name", flat=True))

    def prepared() -> bool:
        text = 'ORDER BY "library_author"."id" DESC'
        return any(text in statement for statement in server_statements("cached"))

    assert newest_named("Le Guin") == ["Le Guin"]
    assert not prepared()  # prepare_threshold is 2
    for _ in range(5):
        assert newest_named("Le Guin") == ["Le Guin"]
    assert prepared()
    stats = sp.pool_stats("cached")
    assert stats.cache_misses >= 1 and stats.cache_hits >= 3
    assert stats.cache_statements >= 1 and 0 < stats.cache_hit_ratio < 1
    [connection_cache] = sp.get_pool("cached").cache_stats()
    assert connection_cache["hits"] == stats.cache_hits


@pytest.mark.django_db(databases=["cached"], transaction=True)
def test_lru_evicts_past_the_cache_size() -> None:
    authors = Author.objects.using("cached")
    lookups = [
        {"name": "x"},
        {"pk": 1},
        {"name__startswith": "x"},
        {"name__endswith": "x"},
        {"pk__gt": 1},
    ]
    for lookup in lookups:
        for _ in range(3):
            list(authors.filter(**lookup))  # a new QuerySet: no result cache
        assert len(server_statements("cached")) <= 3
    stats = sp.pool_stats("cached")
    assert stats.cache_statements == 3
    assert stats.cache_evictions >= 2


def reading_of(table: str, value: int) -> Callable[[], list[tuple[Any, ...]]]:
    """A one-row table, and a cached query of its int column (hot after 3 runs)."""
    with connections["cached"].cursor() as cursor:
        cursor.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, reading int)")
        cursor.execute(f"INSERT INTO {table} VALUES (1, %s)", [value])

    def read() -> list[tuple[Any, ...]]:
        with connections["cached"].cursor() as cursor:
            cursor.execute(f"SELECT reading FROM {table} WHERE id = %s", [1])
            return cursor.fetchall()

    for _ in range(3):
        assert read() == [(value,)]
    return read


@pytest.mark.django_db(databases=["cached"], transaction=True)
def test_alter_column_type_between_two_runs_is_invisible(observer: Observer) -> None:
    read = reading_of("gauge", 42)
    assert any("gauge" in s for s in server_statements("cached"))
    # Another connection (a deploy's migrate) changes the result type.
    observer.conn.execute("ALTER TABLE gauge ALTER COLUMN reading TYPE text")
    assert read() == [("42",)]
    assert sp.pool_stats("cached").cache_invalidations >= 1
    observer.conn.execute("DROP TABLE gauge")


@pytest.mark.django_db(databases=["cached", "default"], transaction=True)
@pytest.mark.parametrize("alias", ["cached", "default"])
def test_small_integers_add_like_literals(alias: str) -> None:
    Author.objects.using(alias).create(name="n")
    for _ in range(3):
        total = (
            Author.objects.using(alias)
            .annotate(total=RawSQL("%s + %s", (30000, 30000)))
            .values_list("total", flat=True)
        )
        assert list(total) == [60000]


@pytest.mark.django_db(databases=["cached", "unpooled"], transaction=True)
def test_multi_statement_and_schema_editor_sql_run() -> None:
    connection = connections["cached"]
    with connection.schema_editor() as editor:
        editor.execute("CREATE TABLE one (id int); CREATE TABLE two (id int)")
        editor.execute("DROP TABLE one; DROP TABLE two")

    def both_selects(alias: str) -> list[Any]:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT %s::int; SELECT %s::int", [1, 2])
            return [cursor.fetchall(), cursor.nextset(), cursor.fetchall()]

    assert both_selects("cached") == both_selects("unpooled") == [[(1,)], True, [(2,)]]


@pytest.mark.django_db(databases=["cached"], transaction=True)
def test_untypeable_statements_fall_back_and_the_decision_is_remembered() -> None:
    def null_check() -> list[tuple[Any, ...]]:
        with connections["cached"].cursor() as cursor:
            cursor.execute("SELECT %s IS NULL AS unknown", [None])
            return cursor.fetchall()

    with transaction.atomic(using="cached"):
        assert null_check() == [(True,)]
        # The transaction is still usable after the failed server-side try.
        assert Author.objects.using("cached").count() == 0
    fallbacks = sp.pool_stats("cached").cache_fallbacks
    assert null_check() == [(True,)]
    assert sp.pool_stats("cached").cache_fallbacks == fallbacks + 1


@pytest.mark.django_db(databases=["cached", "unpooled"], transaction=True)
@pytest.mark.parametrize("alias", ["cached", "unpooled"])
def test_a_real_error_in_a_transaction_aborts_it_as_with_the_stock_backend(
    alias: str,
) -> None:
    author = Author.objects.using(alias).create(name="first")
    with transaction.atomic(using=alias):
        # Raw SQL: no implicit savepoint; the first run of this statement.
        with pytest.raises(IntegrityError), connections[alias].cursor() as cursor:
            cursor.execute(
                "INSERT INTO library_author (id, name) VALUES (%s, %s)",
                [author.pk, f"again via {alias}"],
            )
        aborted = pytest.raises(InternalError, match="current transaction is aborted")
        with aborted, connections[alias].cursor() as cursor:
            cursor.execute("SELECT count(*) FROM library_author WHERE id > %s", [0])
        transaction.set_rollback(True, using=alias)
    assert Author.objects.using(alias).count() == 1


@pytest.mark.django_db(databases=["cached"], transaction=True)
def test_clear_cache_empties_every_connection_and_keeps_the_time_zone() -> None:
    for _ in range(3):
        authors_named("x")
    assert server_statements("cached")
    connections["cached"].close()
    sp.clear_cache("cached")
    assert server_statements("cached") == []
    with connections["cached"].cursor() as cursor:
        cursor.execute("SHOW TIME ZONE")
        assert cursor.fetchone() == ("UTC",)
    assert authors_named("x") == []


@pytest.mark.django_db(databases=["cached"], transaction=True)
def test_migrate_invalidates_the_caches() -> None:
    for _ in range(3):
        authors_named("x")
    connections["cached"].close()
    assert any("library_author" in s for s in server_statements("cached"))
    connections["cached"].close()
    call_command("migrate", database="cached", verbosity=0)
    # What migrate's own post-migrate queries prepared may be there; the
    # statements prepared before the schema change are gone.
    assert not any("library_author" in s for s in server_statements("cached"))


def test_direct_execute_prepares_too(transactional_db: None) -> None:
    pool = sp.start_pool(
        conninfo_of("default"),
        pool_size=1,
        max_overflow=0,
        prepared_statement_cache_size=2,
    )
    try:
        for _ in range(8):  # psycopg's default threshold: prepared on the 6th
            assert sp.execute(pool, "SELECT %s::int + 1", [1]).rows == [(2,)]
        stats = sp.pool_stats(pool)
        assert stats.cache_statements == 1 and stats.cache_hits >= 1
    finally:
        sp.stop_pool(pool)


@pytest.mark.django_db(databases=["cached"], transaction=True)
def test_parameters_repeated_in_group_by_fall_back() -> None:
    """Django #34255: the same value in SELECT and GROUP BY, bound twice."""
    from django.db.models import Min, Value
    from django.db.models.functions import Greatest, Least

    Author.objects.using("cached").create(name="a")
    query = (
        Author.objects.using("cached")
        .annotate(biggest=Greatest("id", Value(600)))
        .values("biggest")
        .annotate(smallest=Min("id"), least=Least("smallest", "biggest"))
        .values_list("least", flat=True)
    )
    with transaction.atomic(using="cached"):
        assert len(list(query)) == 1
    assert len(list(query)) == 1


def test_clear_cache_reaches_every_connection_of_a_larger_pool(
    transactional_db: None,
) -> None:
    pool = sp.get_pool("default")
    pool.wait(timeout=10)
    held = [pool.getconn() for _ in range(pool.stats().idle)]
    try:
        for conn in held:
            psycopg.Cursor(conn).execute("SELECT %s::int * 3", [1], prepare=True)
            assert prepared_count(conn) >= 1
    finally:
        for conn in held[1:]:
            pool.putconn(conn)
    busy = held[0]  # checked out during the clear: cleared when returned
    sp.clear_cache("default")
    pool.putconn(busy)
    again = [pool.getconn() for _ in held]
    try:
        assert {id(conn) for conn in again} == {id(conn) for conn in held}
        for conn in again:
            assert prepared_count(conn) == 0
            assert conn.execute("SHOW TIME ZONE").fetchone() == ("UTC",)
    finally:
        for conn in again:
            pool.putconn(conn)


def prepared_count(conn: psycopg.Connection[Any]) -> int:
    return conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]


@pytest.mark.django_db(databases=["cached"], transaction=True)
def test_a_stale_statement_fails_once_inside_a_transaction(observer: Observer) -> None:
    read = reading_of("dial", 7)
    observer.conn.execute("ALTER TABLE dial ALTER COLUMN reading TYPE text")
    stale = pytest.raises(NotSupportedError, match="cached plan")
    with stale, transaction.atomic(using="cached"):
        read()
    with transaction.atomic(using="cached"):
        assert read() == [("7",)]
    observer.conn.execute("DROP TABLE dial")


def test_a_disabled_cache_prepares_nothing(transactional_db: None) -> None:
    pool = sp.start_pool(
        conninfo_of("default"), pool_size=1, prepared_statement_cache_size=0
    )
    try:
        for _ in range(3):
            sp.execute(pool, "SELECT %s::int", [1], prepare=True)
        with sp.with_connection(pool) as conn:
            assert prepared_count(conn) == 0
    finally:
        sp.stop_pool(pool)


@pytest.mark.django_db(databases=["cached"], transaction=True)
def test_executemany_falls_back_like_execute() -> None:
    # Typeable with an int first: "$1 IS NULL" can't be typed when $1 is NULL.
    insert = (
        "INSERT INTO library_author (name) "
        "VALUES (CASE WHEN %s IS NULL THEN 'unknown' ELSE %s END)"
    )
    fallbacks = sp.pool_stats("cached").cache_fallbacks
    with connections["cached"].cursor() as cursor:
        cursor.execute(insert, [1, "a"])  # verified: runs server-side from now on
        # Typeable on the first row, not on the second: nothing may run twice.
        cursor.executemany(insert, [[2, "b"], [None, None]])
        assert cursor.rowcount == 2
    with transaction.atomic(using="cached"), connections["cached"].cursor() as cursor:
        cursor.executemany(insert, [[3, "c"], [None, "d"], [4, "e"]])
        assert cursor.rowcount == 3
        # The transaction is still usable after the failed server-side try.
        assert Author.objects.using("cached").count() == 6
    names = Author.objects.using("cached").order_by("name").values_list("name")
    assert [name for (name,) in names] == ["a", "b", "c", "e", "unknown", "unknown"]
    assert sp.pool_stats("cached").cache_fallbacks == fallbacks + 2


@pytest.mark.django_db(databases=["cached"], transaction=True)
def test_executemany_of_other_statements_is_one_batch() -> None:
    # A leading comment (as SQL commenters add) makes it "not a single DML".
    insert = "/* bulk */ INSERT INTO library_author (name) VALUES (%s)"
    with connections["cached"].cursor() as cursor:
        cursor.executemany(insert, [["x"], ["y"]])
        assert cursor.rowcount == 2
        with pytest.raises(IntegrityError):
            cursor.executemany(
                "/* bulk */ INSERT INTO library_author (id, name) VALUES (%s, %s)",
                [[-1, "first"], [-1, "duplicate"]],
            )
    # All rows or none, as with Django's stock cursor.
    assert Author.objects.using("cached").filter(pk=-1).count() == 0


@pytest.mark.django_db(databases=["cached"], transaction=True)
def test_executemany_returning_keeps_every_rows_results() -> None:
    insert = "INSERT INTO library_author (name) VALUES (%s) RETURNING name"
    with sp.with_connection("cached") as conn, conn.cursor() as cursor:
        assert isinstance(cursor, SelectoCursor)
        cursor.executemany(insert, [["x"], ["y"], ["z"]], returning=True)
        names = [cursor.fetchone()]
        while cursor.nextset():
            names.append(cursor.fetchone())
    assert names == [("x",), ("y",), ("z",)]
