"""The direct API's statements: ``execute()`` and ``aexecute()`` alike.

Both run a statement with the ORM cursor's decisions (``_conn.execution``):
bound server-side and prepared once hot in the process, the stock way
(bound client-side) for what the server can't type or can't prepare, and
transparent recovery when a prepared copy went stale outside a transaction.
Each test runs once with the sync pool and once with the async one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import selecto_pool as sp

from .support.database import Observer, conninfo_of


@dataclass
class Direct:
    """One pool of either kind, driven from sync test code."""

    execute: Callable[..., sp.Result]
    stats: Callable[[], sp.PoolStats]
    clear_cache: Callable[[], None]


@pytest.fixture(params=["sync", "async"])
def direct(request: pytest.FixtureRequest, transactional_db: None) -> Iterator[Any]:
    def start(**options: Any) -> Direct:
        options = {"pool_size": 2, "max_overflow": 0, **options}
        if request.param == "sync":
            pool = sp.start_pool(conninfo_of("default"), **options)
            pool.wait(timeout=10)
            stops.append(lambda: sp.stop_pool(pool, timeout=1))
            return Direct(
                lambda *a, **k: sp.execute(pool, *a, **k),
                pool.stats,
                lambda: sp.clear_cache(pool),
            )
        loop = asyncio.new_event_loop()
        apool = loop.run_until_complete(
            sp.astart_pool(conninfo_of("default"), **options)
        )
        loop.run_until_complete(apool.wait(timeout=10))

        def stop() -> None:
            loop.run_until_complete(sp.astop_pool(apool, timeout=1))
            loop.close()

        stops.append(stop)
        return Direct(
            lambda *a, **k: loop.run_until_complete(sp.aexecute(apool, *a, **k)),
            apool.stats,
            lambda: loop.run_until_complete(sp.aclear_cache(apool)),
        )

    stops: list[Callable[[], None]] = []
    yield start
    for stop in stops:
        stop()


def _unique(sql: str) -> str:
    """``sql`` with a comment of its own: decisions are kept per process."""
    return f"{sql} -- {uuid.uuid4().hex}"


def test_a_hot_statement_is_prepared_on_each_connection_at_its_first_run_there(
    direct: Any,
) -> None:
    pool = direct(prepare_threshold=3)
    sql = _unique("SELECT %s::int AS n")
    for n in range(3):
        assert pool.execute(sql, [n]).rows == [(n,)]
    assert pool.stats().cache_misses == 0  # not hot yet
    # Hot in the process now: prepared on each of the 2 connections at its
    # first run there (psycopg alone counts per connection: 3 more each).
    pool.execute(sql, [3])
    pool.execute(sql, [4])
    stats = pool.stats()
    assert (stats.cache_misses, stats.cache_statements) == (2, 2)
    pool.execute(sql, [5])
    assert pool.stats().cache_hits == 1


def test_a_statement_the_server_cannot_type_runs_the_stock_way(direct: Any) -> None:
    pool = direct()
    sql = _unique("SELECT %s IS NULL AS unknown")
    # Server-side, $1 has no type: "could not determine data type of
    # parameter $1". Inlined, NULL IS NULL is true.
    assert pool.execute(sql, [None]).rows == [(True,)]
    assert pool.execute(sql, [None]).rows == [(True,)]
    assert pool.stats().cache_fallbacks == 2


def test_a_prepared_statement_gone_stale_is_rerun_transparently(
    direct: Any, observer: Observer
) -> None:
    observer.conn.execute("CREATE TABLE widened (code varchar, n int)")
    observer.conn.execute("INSERT INTO widened VALUES ('42', 7)")
    try:
        pool = direct(pool_size=1)
        sql = _unique("SELECT n FROM widened WHERE code = %s")
        assert pool.execute(sql, ["42"], prepare=True).rows == [(7,)]
        assert pool.stats().cache_statements == 1
        observer.conn.execute("ALTER TABLE widened ALTER n TYPE bigint")
        # "cached plan must not change result type": nothing ran, it runs
        # again afresh, the caller sees only the result.
        assert pool.execute(sql, ["42"], prepare=True).rows == [(7,)]
        assert pool.stats().cache_invalidations >= 1
    finally:
        observer.conn.execute("DROP TABLE widened")


def test_what_cannot_be_prepared_is_bound_client_side(direct: Any) -> None:
    pool = direct(prepare_threshold=2)
    # Two statements in one string: a prepared statement holds only one,
    # however often it runs.
    for n in range(4):
        assert pool.execute("SELECT %s::int AS a; SELECT 2", [n]).rows == [(n,)]
    # Not a statement PREPARE takes, however often it runs.
    for _ in range(4):
        pool.execute("SET statement_timeout = %s", ["5s"])
    # More parameters than the protocol carries (65,535): libpq refuses them
    # unsent; Django's stock cursor inlines them.
    values = list(range(65_536))
    placeholders = ", ".join(["(%s)"] * len(values))
    result = pool.execute(f"SELECT count(*) FROM (VALUES {placeholders}) v", values)
    assert result.rows == [(65_536,)]
    assert pool.stats().cache_statements == 0


def test_clear_cache_deallocates_every_idle_connections_statements(
    direct: Any,
) -> None:
    pool = direct()
    sql = _unique("SELECT %s::int")
    for n in range(4):
        pool.execute(sql, [n], prepare=True)
    assert pool.stats().cache_statements == 2
    pool.clear_cache()
    assert pool.stats().cache_statements == 0
    for _ in range(2):
        count = "SELECT count(*) FROM pg_prepared_statements"
        assert pool.execute(count, prepare=False).rows == [(0,)]
