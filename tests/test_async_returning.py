"""Giving a connection back to an async pool: bounded, and the session reset
on return, as the sync pool does (tests/test_returning.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest

import selecto_pool as sp
from testproject.pgserver import LocalPostgres

from .support.aio import async_pool
from .support.database import Observer, conninfo_of
from .support.proxy import Proxy

AsyncConnection = psycopg.AsyncConnection[Any]


async def returned_within(seconds: float, give_back: Awaitable[None]) -> bool:
    """Whether ``give_back`` finished within ``seconds`` (its error raised)."""
    task = asyncio.ensure_future(give_back)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if task in done:
        task.result()
        return True
    return False


# -- a return never waits for long -------------------------------------------------
async def copy_half_read(conn: AsyncConnection) -> AsyncIterator[object]:
    async with conn.cursor().copy(
        "COPY (SELECT generate_series(1, 1000000)) TO STDOUT"
    ) as copy:
        await copy.read()
        yield copy


async def stream_half_read(conn: AsyncConnection) -> AsyncIterator[object]:
    rows = conn.cursor().stream("SELECT generate_series(1, 1000000)")
    await rows.__anext__()
    yield rows


async def pipeline_left_open(conn: AsyncConnection) -> AsyncIterator[object]:
    async with conn.pipeline() as pipeline:
        await conn.execute("SELECT 1")
        await pipeline.sync()
        yield pipeline


@pytest.mark.parametrize(
    "in_progress", [copy_half_read, stream_half_read, pipeline_left_open]
)
def test_a_connection_returned_mid_operation_is_closed_at_once(
    observer: Observer,
    in_progress: Callable[[AsyncConnection], AsyncIterator[object]],
) -> None:
    async def scenario() -> None:
        async with async_pool(
            conninfo_of("default"), pool_size=1, max_overflow=0
        ) as pool:
            conn = await sp.acheckout(pool)
            pid = conn.info.backend_pid
            operation = in_progress(conn)
            await operation.__anext__()  # the borrower is in the middle of it
            try:
                assert await returned_within(2, sp.acheckin(pool, conn))
            finally:
                if not conn.closed:  # stuck: let the test end
                    observer.terminate([pid])
            assert conn.closed
            async with sp.awith_connection(pool) as fresh:
                assert fresh.info.backend_pid != pid
                assert fresh.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
                assert await (await fresh.execute("SELECT 1")).fetchone() == (1,)

    asyncio.run(scenario())


@pytest.fixture
def proxy(spare_server: LocalPostgres) -> Iterator[Proxy]:
    with Proxy(spare_server.port) as running:
        yield running


@pytest.mark.slow
@pytest.mark.parametrize("left", ["a transaction", "session state to reset"])
def test_a_stalled_network_bounds_the_return_to_connection_timeout(
    proxy: Proxy, spare_server: LocalPostgres, left: str
) -> None:
    async def scenario() -> float:
        async with async_pool(
            {**spare_server.conninfo(), "port": proxy.port},
            pool_size=1,
            max_overflow=0,
            connection_timeout=2,
            reset="session" if left == "session state to reset" else None,
        ) as pool:
            conn = await sp.acheckout(pool)
            if left == "a transaction":
                await conn.set_autocommit(False)
            await conn.execute("SELECT 1")
            proxy.latency = 60  # nothing gets through any more
            started = time.monotonic()
            try:
                assert await returned_within(4, sp.acheckin(pool, conn))
            finally:
                proxy.latency = 0
                proxy.drop()
            took = time.monotonic() - started
            assert conn.closed
            assert (await sp.aexecute(pool, "SELECT 1")).rows == [(1,)]
            return took

    took = asyncio.run(scenario())
    print(f"\nasync return on a stalled network ({left}): {took:.3f} s")
    assert 2 <= took < 3.5


# -- the reset option ------------------------------------------------------------
async def raw_discard_all(conn: AsyncConnection) -> None:
    """A reset psycopg can't see into."""
    conn.pgconn.exec_(b"DISCARD ALL")


RESETS: dict[str, Any] = {
    "session": "session",
    "discard": "discard",
    "async function": lambda conn: conn.execute("DISCARD ALL"),
    "raw async function": raw_discard_all,
}

LEAVE_STATE = [
    "SET search_path TO pg_catalog",
    "SET statement_timeout = 1234",
    "SET TimeZone = 'Pacific/Auckland'",
    "SELECT pg_advisory_lock(4242)",
    "LISTEN selecto_reset_channel",
    "DECLARE leftover CURSOR WITH HOLD FOR SELECT 1",
    "CREATE TEMP TABLE leftover_rows AS SELECT 'secret' AS secret",
]

SEE_STATE = {
    "search_path": "SHOW search_path",
    "statement_timeout": "SHOW statement_timeout",
    "TimeZone": "SHOW TimeZone",
    "advisory locks": "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
    " AND pid = pg_backend_pid()",
    "LISTEN": "SELECT count(*) FROM pg_listening_channels()",
    "cursors": "SELECT count(*) FROM pg_cursors",
    "temp table": "SELECT to_regclass('pg_temp.leftover_rows')::text",
    "backend": "SELECT pg_backend_pid()",
}


async def session_state(pool: sp.AsyncSelectoPool) -> dict[str, Any]:
    async with sp.awith_connection(pool) as conn:
        return {
            what: (await (await conn.execute(sql)).fetchone() or [None])[0]
            for what, sql in SEE_STATE.items()
        }


@pytest.mark.parametrize("reset", list(RESETS))
def test_reset_clears_the_session(transactional_db: None, reset: str) -> None:
    async def scenario() -> None:
        async with async_pool(
            conninfo_of("default"), pool_size=1, max_overflow=0, reset=RESETS[reset]
        ) as pool:
            fresh = await session_state(pool)
            async with sp.awith_connection(pool) as conn:
                for sql in LEAVE_STATE:
                    await conn.execute(sql)
                dirty = {
                    what: (await (await conn.execute(sql)).fetchone() or [None])[0]
                    for what, sql in SEE_STATE.items()
                }
            assert dirty["temp table"] is not None and dirty["LISTEN"] == 1
            assert await session_state(pool) == fresh  # the same backend, as new

    asyncio.run(scenario())


def prepared_on_server_query() -> str:
    return "SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql"


@pytest.mark.parametrize("reset", list(RESETS))
def test_the_statement_cache_follows_each_reset(
    transactional_db: None, reset: str
) -> None:
    query = "SELECT %s::int + 1"

    async def on_server(conn: AsyncConnection) -> int:
        cursor = await conn.execute(prepared_on_server_query(), prepare=False)
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    async def scenario() -> None:
        async with async_pool(
            conninfo_of("default"),
            pool_size=1,
            max_overflow=0,
            prepare_threshold=0,
            reset=RESETS[reset],
        ) as pool:
            async with sp.awith_connection(pool) as conn:
                assert await (await conn.execute(query, [1])).fetchone() == (2,)
                assert await on_server(conn) == 1
            [cache] = pool.cache_stats()
            async with sp.atransaction(pool) as conn:
                # Inside a transaction a missing statement could not be retried.
                assert await (await conn.execute(query, [2])).fetchone() == (3,)
                [cache_now] = pool.cache_stats()
                assert await on_server(conn) == cache_now["statements"] == 1
            if reset == "session":  # kept: the second run was a hit
                assert cache_now["hits"] == cache["hits"] + 1
            else:  # dropped and prepared again
                assert cache_now["misses"] == cache["misses"] + 1

    asyncio.run(scenario())


def test_a_reset_that_fails_closes_the_connection(
    transactional_db: None, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(conn: AsyncConnection) -> None:
        raise RuntimeError("a bug in the reset")

    async def leaves_a_transaction(conn: AsyncConnection) -> None:
        await conn.execute("BEGIN")

    def generator(conn: AsyncConnection) -> Iterator[None]:
        yield  # runs nothing when called

    async def scenario() -> None:
        for reset in (broken, leaves_a_transaction, generator):
            async with async_pool(
                conninfo_of("default"), pool_size=1, max_overflow=0, reset=reset
            ) as pool:
                async with sp.awith_connection(pool) as conn:
                    pid = conn.info.backend_pid
                assert conn.closed
                async with sp.awith_connection(pool) as conn:
                    assert conn.info.backend_pid != pid

    caplog.set_level(logging.DEBUG, logger="selecto_pool")
    asyncio.run(scenario())
    assert "a bug in the reset" in caplog.text
    assert "its reset left it INTRANS, not IDLE" in caplog.text
    assert "returned a generator, and so did nothing" in caplog.text


def test_what_a_borrower_set_on_the_async_connection_is_undone(
    transactional_db: None,
) -> None:
    """Row factory, cursor factory, isolation level, read-only, deferrable:
    set by one borrower, they would reach the next (see the sync test)."""

    async def scenario() -> None:
        async with async_pool(
            conninfo_of("default"), pool_size=1, max_overflow=0
        ) as pool:
            async with sp.awith_connection(pool) as conn:
                defaults = (
                    conn.row_factory,
                    conn.cursor_factory,
                    conn.isolation_level,
                    conn.read_only,
                    conn.deferrable,
                )
                conn.row_factory = psycopg.rows.dict_row
                conn.cursor_factory = psycopg.AsyncClientCursor
                await conn.set_read_only(True)
                await conn.set_deferrable(True)
                await conn.set_isolation_level(psycopg.IsolationLevel.SERIALIZABLE)
            async with sp.awith_connection(pool) as again:
                assert again is conn
                assert (
                    again.row_factory,
                    again.cursor_factory,
                    again.isolation_level,
                    again.read_only,
                    again.deferrable,
                ) == defaults
                async with again.transaction():
                    cursor = await again.execute("SHOW transaction_isolation")
                    assert await cursor.fetchone() == ("read committed",)
                    await again.execute("CREATE TEMPORARY TABLE written (x int)")

    asyncio.run(scenario())


@pytest.mark.parametrize("reset", ["session", "discard"])
def test_a_reset_drops_the_notifications_received_for_the_last_borrower(
    observer: Observer, reset: str
) -> None:
    async def scenario() -> None:
        async with async_pool(
            conninfo_of("default"), pool_size=1, max_overflow=0, reset=reset
        ) as pool:
            async with sp.awith_connection(pool) as conn:
                await conn.execute("LISTEN selecto_reset_notes")
                observer.conn.execute("NOTIFY selecto_reset_notes, 'for the last one'")
                await asyncio.sleep(0.1)
                await conn.execute("SELECT 1")  # received meanwhile, kept by psycopg
            async with sp.awith_connection(pool) as again:
                assert again is conn
                assert [n async for n in again.notifies(timeout=0.1)] == []

    asyncio.run(scenario())


def test_a_tracked_named_cursor_left_open_is_closed_on_return(
    transactional_db: None,
) -> None:
    async def scenario() -> None:
        async with async_pool(
            conninfo_of("default"), pool_size=1, max_overflow=0
        ) as pool:
            async with sp.awith_connection(pool) as conn:
                cursor = conn.cursor("left_open", withhold=True)
                await cursor.execute("SELECT generate_series(1, 100000)")
                assert len(await cursor.fetchmany(10)) == 10
                pool.track_cursor(conn, cursor)
            async with sp.awith_connection(pool) as again:
                assert again is conn
                count = await again.execute("SELECT count(*) FROM pg_cursors")
                assert await count.fetchone() == (0,)
                await cursor.close()  # its owner lets go late: nothing is sent
                assert await (await again.execute("SELECT 1")).fetchone() == (1,)

    asyncio.run(scenario())


# -- what /health/db's probe needs of a pool --------------------------------------
def test_getconn_if_idle_never_waits_nor_grows_and_putconn_can_skip_the_reset(
    transactional_db: None,
) -> None:
    async def scenario() -> None:
        async with async_pool(
            conninfo_of("default"), pool_size=1, max_overflow=1, reset="session"
        ) as pool:
            await pool.wait(timeout=10)
            held = await sp.acheckout(pool)
            started = time.monotonic()
            assert await pool.getconn_if_idle() is None
            assert time.monotonic() - started < 0.5
            await asyncio.sleep(0.2)  # a growing pool would open one now
            assert sp.pool_stats(pool).connections == 1
            await sp.acheckin(pool, held)

            conn = await pool.getconn_if_idle()
            assert conn is held and sp.pool_stats(pool).in_use == 1
            await conn.execute("SET search_path TO pg_catalog")
            await pool.putconn(conn, reset=False)  # kept: no reset
            async with sp.awith_connection(pool) as again:
                cursor = await again.execute("SHOW search_path")
                assert await cursor.fetchone() == ("pg_catalog",)
            async with sp.awith_connection(pool) as again:  # reset by the return
                cursor = await again.execute("SHOW search_path")
                assert await cursor.fetchone() != ("pg_catalog",)
            assert sp.pool_stats(pool).checkouts == 4

    asyncio.run(scenario())
