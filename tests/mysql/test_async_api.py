"""The async direct API on MySQL: astart_pool(config, adapter="mysql") and the rest.

mysqlclient blocks; the pool runs its calls in threads of its own, and a
task cancelled mid-query has the query stopped on the server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from io import StringIO
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

import selecto_pool as sp
from selecto_pool import AsyncMySQLPool, CheckoutTimeout, PoolClosed, PoolStartError
from testproject.mariaserver import LocalMariaDB

from ..support.aio import LagMeter, loop_thread, until
from ..support.mariadb import Observer
from ..support.proxy import Proxy

SLEEP = 0.05


class Server:
    """What a test needs to start pools on the module's database."""

    def __init__(self, server: LocalMariaDB, database: str):
        self.server = server
        self.database = database

    def kwargs(self, **overrides: Any) -> dict[str, Any]:
        return {**self.server.connect_kwargs(self.database), **overrides}

    async def start(self, **options: Any) -> AsyncMySQLPool:
        pool = await sp.astart_pool(self.kwargs(), adapter="mysql", **options)
        await sp.aexecute(
            pool, "CREATE TABLE IF NOT EXISTS ledger (id int, note varchar(20))"
        )
        return pool


@pytest.fixture
def mysql(mariadb_server: LocalMariaDB, database: str) -> Server:
    return Server(mariadb_server, database)


def pool_threads(pool: AsyncMySQLPool) -> list[threading.Thread]:
    return [
        thread
        for thread in threading.enumerate()
        if thread.name.startswith(f"selecto_pool[{pool.name}]")
    ]


async def notes(pool: AsyncMySQLPool) -> list[str]:
    result = await sp.aexecute(pool, "SELECT note FROM ledger ORDER BY id")
    return [note for (note,) in result]


def test_aexecute_returns_what_execute_returns(mysql: Server) -> None:
    async def scenario() -> None:
        pool = await sp.astart_pool(
            mysql.server.url_for(mysql.database), adapter="mysql", name="amysql"
        )
        try:
            assert isinstance(pool, AsyncMySQLPool) and pool.name == "amysql"
            result = await sp.aexecute(pool, "SELECT %s + 1 AS answer, 'x' AS l", [41])
            assert result == sp.Result([(42, "x")], ("answer", "l"), 1, None)
            await sp.aexecute(pool, "CREATE TABLE t (id int)")
            written = await sp.aexecute(pool, "INSERT INTO t VALUES (1), (%s)", [2])
            assert (written.rows, written.rowcount) == ([], 2)
            with pytest.raises(ValueError, match="prepare nothing"):
                await sp.aexecute(pool, "SELECT 1", prepare=True)
            await sp.aclear_cache(pool)  # nothing to deallocate, as clear_cache()
            stats = sp.pool_stats(pool)
            assert (stats.checkouts, stats.in_use, stats.name) == (3, 0, "amysql")
        finally:
            await sp.astop_pool(pool)
        assert pool.closed
        with pytest.raises(PoolClosed):
            await sp.aexecute(pool, "SELECT 1")
        await until(lambda: not pool_threads(pool))  # its threads ended

    asyncio.run(scenario())


def test_options_and_errors_are_start_pools(mysql: Server) -> None:
    async def scenario() -> None:
        with pytest.raises(ImproperlyConfigured, match="'reset'"):
            await sp.astart_pool(mysql.kwargs(), adapter="mysql", reset="DISCARD ALL")
        with pytest.raises(ImproperlyConfigured, match="pool_size"):
            await sp.astart_pool(mysql.kwargs(), adapter="mysql", pool_size=-1)
        with pytest.raises(PoolStartError) as info:
            await sp.astart_pool(
                mysql.kwargs(password="hunter2-wrong"), adapter="mysql"
            )
        assert "Access denied" in str(info.value)
        assert "hunter2" not in str(info.value)
        with pytest.raises(ImproperlyConfigured) as refused:
            await sp.astart_pool(mysql.kwargs(), adapter="oracle")
        assert "'postgresql' or 'mysql'" in str(refused.value)

    asyncio.run(scenario())


def test_concurrent_queries_run_in_the_pools_threads_without_blocking_the_loop(
    mysql: Server,
) -> None:
    async def scenario() -> tuple[float, LagMeter, sp.PoolStats, int]:
        pool = await mysql.start(pool_size=4, max_overflow=0)
        try:
            await sp.aexecute(pool, "SELECT 1")
            async with LagMeter() as lag:
                started = time.monotonic()
                results = await asyncio.gather(
                    *(sp.aexecute(pool, f"SELECT SLEEP({SLEEP})") for _ in range(20))
                )
                elapsed = time.monotonic() - started
            assert all(result.rows == [(0,)] for result in results)
            # The pool's own threads, not the loop's default executor.
            assert asyncio.get_running_loop()._default_executor is None  # type: ignore[attr-defined]
            return elapsed, lag, sp.pool_stats(pool), len(pool_threads(pool))
        finally:
            await sp.astop_pool(pool)

    elapsed, lag, stats, threads = asyncio.run(scenario())
    # 20 sleeps, 4 at a time: 5 rounds of SLEEP.
    assert 5 * SLEEP * 0.9 <= elapsed < 5 * SLEEP + 1.5
    assert lag.worst_own < 0.020
    assert (stats.connections, stats.checkouts, stats.in_use) == (4, 22, 0)
    assert 4 <= threads <= 3 * 4 + 1


def test_acheckout_gives_an_aiomysql_style_connection(mysql: Server) -> None:
    async def scenario() -> None:
        pool = await mysql.start(pool_size=2, max_overflow=0)
        try:
            conn = await sp.acheckout(pool)
            try:
                await conn.begin()
                async with conn.cursor() as cur:
                    assert await cur.execute("INSERT INTO ledger VALUES (1, %s)", ["a"])
                    await conn.rollback()
                    await cur.execute("INSERT INTO ledger VALUES (2, %s)", ["b"])
                    await cur.execute("SELECT note FROM ledger")
                    assert await cur.fetchall() == (("b",),)
                    assert cur.description[0][0] == "note"
                assert (
                    await conn.run_sync(lambda raw: raw.thread_id()) == conn.thread_id
                )
                assert sp.pool_stats(pool).in_use == 1
            finally:
                await sp.acheckin(pool, conn)
            assert sp.pool_stats(pool).in_use == 0
            with pytest.raises(ValueError, match="returned twice"):
                await sp.acheckin(pool, conn)
            assert await notes(pool) == ["b"]  # autocommit, as start_pool()'s
        finally:
            await sp.astop_pool(pool)

    asyncio.run(scenario())


def test_atransaction_commits_or_rolls_back(mysql: Server) -> None:
    async def scenario() -> None:
        pool = await mysql.start(pool_size=1, max_overflow=0)
        try:
            async with sp.atransaction(pool) as conn, conn.cursor() as cur:
                await cur.execute("INSERT INTO ledger VALUES (1, 'kept')")
            with pytest.raises(ZeroDivisionError):
                async with sp.atransaction(pool) as conn:
                    async with conn.cursor() as cur:
                        await cur.execute("INSERT INTO ledger VALUES (2, 'lost')")
                    1 / 0  # noqa: B018

            async def insert(conn: sp.AsyncMySQLConnection) -> int:
                async with conn.cursor() as cur:
                    return await cur.execute("INSERT INTO ledger VALUES (3, 'fn')")

            assert await sp.atransaction(pool, insert) == 1

            async def peek(conn: sp.AsyncMySQLConnection) -> Any:
                return await conn.run_sync(lambda raw: raw.get_autocommit())

            assert await sp.awith_connection(pool, peek) is True
            assert await notes(pool) == ["kept", "fn"]
            stats = sp.pool_stats(pool)
            # Rolled back by the block, not on return; one connection all along.
            assert (stats.rollbacks_on_return, stats.connections_opened) == (0, 1)
        finally:
            await sp.astop_pool(pool)

    asyncio.run(scenario())


async def running_sleep(observer: Observer, database: str) -> None:
    """Until the server runs a SLEEP on ``database``."""

    def sleeping() -> bool:
        return bool(
            observer.rows(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s "
                "AND INFO LIKE 'SELECT SLEEP%%'",
                [database],
            )
        )

    await until(sleeping)


def test_a_cancelled_query_is_stopped_on_the_server(
    mysql: Server, observer: Observer
) -> None:
    async def scenario() -> None:
        pool = await mysql.start(pool_size=1, max_overflow=0, checkout_timeout=5)
        try:
            (session,) = await sp.aexecute(pool, "SELECT CONNECTION_ID()")
            async with LagMeter() as lag:
                task = asyncio.create_task(sp.aexecute(pool, "SELECT SLEEP(10)"))
                await running_sleep(observer, mysql.database)
                started = time.monotonic()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert time.monotonic() - started < 0.5
                # The next query gets the very connection, promptly.
                result = await sp.aexecute(pool, "SELECT CONNECTION_ID()")
                assert time.monotonic() - started < 3
            assert result.rows == [session]
            assert lag.worst_own < 0.050
            stats = sp.pool_stats(pool)
            assert (stats.in_use, stats.idle, stats.connections) == (0, 1, 1)
            assert (stats.connections_replaced, stats.checkouts) == (0, 4)
        finally:
            await sp.astop_pool(pool)

    asyncio.run(scenario())


def test_a_cancelled_query_that_cant_be_killed_closes_its_connection(
    mysql: Server,
) -> None:
    """The server unreachable (a proxy holding every packet): KILL QUERY can't connect,
    so the socket is shut down and the connection discarded, not pooled."""

    async def scenario(proxy: Proxy) -> None:
        pool = await sp.astart_pool(
            mysql.kwargs(port=proxy.port, connect_timeout=1),
            adapter="mysql",
            pool_size=1,
            max_overflow=0,
        )
        try:
            await sp.aexecute(pool, "SELECT 1")
            task = asyncio.create_task(sp.aexecute(pool, "SELECT SLEEP(10)"))
            await asyncio.sleep(0.3)
            proxy.latency = 5.0  # KILL QUERY's connection can't get through
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - started < 0.5
            await until(lambda: sp.pool_stats(pool).in_use == 0, timeout=15)
            stats = sp.pool_stats(pool)
            assert stats.connections_replaced == 1
            proxy.latency = 0.0
            assert (await sp.aexecute(pool, "SELECT 2")).rows == [(2,)]
        finally:
            await sp.astop_pool(pool)

    with Proxy(mysql.server.port) as proxy:
        asyncio.run(scenario(proxy))


def test_a_storm_of_cancellations_leaves_the_pool_whole(
    mysql: Server, observer: Observer
) -> None:
    async def scenario() -> None:
        pool = await mysql.start(pool_size=3, max_overflow=1, checkout_timeout=10)
        try:
            tasks = [
                asyncio.create_task(sp.aexecute(pool, "SELECT SLEEP(10)"))
                for _ in range(12)
            ]
            await running_sleep(observer, mysql.database)
            await asyncio.sleep(0.1)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            results = await asyncio.gather(
                *(sp.aexecute(pool, "SELECT 1") for _ in range(8))
            )
            assert all(result.rows == [(1,)] for result in results)
            await until(lambda: sp.pool_stats(pool).in_use == 0)
            assert sp.pool_stats(pool).connections <= 4
        finally:
            await sp.astop_pool(pool)
        # Nothing left on the server (a session being killed takes a moment
        # to end, and one whose KILL failed under load is killed again).
        await until(
            lambda: (
                not [
                    row
                    for row in observer.rows("SHOW PROCESSLIST")
                    if row[3] == mysql.database
                ]
            ),
            timeout=8,
        )

    asyncio.run(scenario())


def test_checkout_timeout_and_waiters_beyond_the_threads(mysql: Server) -> None:
    async def scenario() -> None:
        pool = await mysql.start(pool_size=1, max_overflow=0, checkout_timeout=0.3)
        try:
            held = await sp.acheckout(pool)
            # More waiters than the pool has checkout threads: all time out.
            waiters = await asyncio.gather(
                *(sp.acheckout(pool) for _ in range(3)), return_exceptions=True
            )
            assert all(isinstance(error, CheckoutTimeout) for error in waiters)
            assert "became free within 0.30 s" in str(waiters[-1])
            assert "1 in use of pool_size 1" in str(waiters[-1])
            assert sp.pool_stats(pool).checkout_timeouts == 3
            # A waiter is served as soon as the holder gives back.
            waiting = asyncio.create_task(sp.aexecute(pool, "SELECT 3"))
            await asyncio.sleep(0.05)
            await sp.acheckin(pool, held)
            assert (await waiting).rows == [(3,)]
        finally:
            await sp.astop_pool(pool)

    asyncio.run(scenario())


def test_astop_pool_waits_for_running_queries(mysql: Server) -> None:
    async def scenario() -> None:
        pool = await mysql.start(pool_size=2, max_overflow=0)
        running = asyncio.create_task(sp.aexecute(pool, "SELECT SLEEP(0.3)"))
        await asyncio.sleep(0.1)
        await sp.astop_pool(pool, timeout=5)
        assert (await running).rows == [(0,)]
        assert pool.closed and sp.pool_stats(pool).connections == 0
        with pytest.raises(PoolClosed, match="stopping"):
            await sp.acheckout(pool)
        await until(lambda: not pool_threads(pool))

    asyncio.run(scenario())


def test_a_pool_belongs_to_its_event_loop(mysql: Server) -> None:
    async def start() -> AsyncMySQLPool:
        return await mysql.start(pool_size=1)

    with loop_thread() as loop:
        pool = loop.run(start())
        try:

            async def elsewhere() -> None:
                with pytest.raises(RuntimeError, match="belongs to the event loop"):
                    await sp.aexecute(pool, "SELECT 1")

            asyncio.run(elsewhere())
            assert loop.run(sp.aexecute(pool, "SELECT 1")).rows == [(1,)]
        finally:
            loop.run(sp.astop_pool(pool))


@pytest.fixture
def listed_pool(mysql: Server) -> AsyncIterator[Any]:
    with loop_thread() as loop:
        pool = loop.run(mysql.start(pool_size=2, max_overflow=0, name="ops-amysql"))
        yield pool
        loop.run(sp.astop_pool(pool))


def test_poolstats_lists_it_as_a_direct_pool(
    listed_pool: AsyncMySQLPool, transactional_db: None
) -> None:
    out = StringIO()
    call_command("poolstats", "--local", "--json", stdout=out)
    rows = {row["alias"]: row for row in json.loads(out.getvalue())["processes"]}
    row = rows["direct:ops-amysql"]
    assert (row["kind"], row["max_size"], row["checkouts"]) == ("direct", 2, 1)
