"""The async direct API: concurrency without blocking the loop, and its faults.

Every test runs its scenario in ``asyncio.run()`` against the real test
server. Timing bounds are set so that a loaded 2-core machine passes and a
blocking implementation fails (each says why).
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from typing import Any

import psycopg
import psycopg_pool
import pytest
from django.core.exceptions import ImproperlyConfigured

import selecto_pool as sp
from selecto_pool import CheckoutTimeout, PoolStartError
from selecto_pool._process import shutdown

from .support.aio import LagMeter, async_pool, until
from .support.database import Observer, conninfo_of

SLEEP = 0.05


def test_concurrent_queries_share_five_connections_without_blocking_the_loop(
    transactional_db: None,
) -> None:
    async def scenario() -> tuple[float, LagMeter, sp.PoolStats]:
        async with async_pool(
            conninfo_of("default"), pool_size=5, max_overflow=0
        ) as pool:
            await pool.wait(timeout=10)
            async with LagMeter() as lag:
                started = time.monotonic()
                results = await asyncio.gather(
                    *(
                        sp.aexecute(pool, f"select pg_sleep({SLEEP})", [])
                        for _ in range(50)
                    )
                )
                elapsed = time.monotonic() - started
            assert all(len(result.rows) == 1 for result in results)
            return elapsed, lag, sp.pool_stats(pool)

    elapsed, lag, stats = asyncio.run(scenario())
    print(
        f"\n50 x pg_sleep({SLEEP}) on 5 connections: {elapsed:.3f} s; event-loop "
        f"lag max {lag.worst * 1000:.1f} ms, {lag.worst_own * 1000:.1f} ms "
        f"without run-queue waits and collections, over {len(lag.lags)} ticks"
    )
    # 10 rounds of 50 ms on 5 connections at least; a call blocking the loop
    # would serialise them (50 x 50 ms = 2.5 s). The slack is for a loaded
    # machine.
    assert 10 * SLEEP <= elapsed < 25 * SLEEP
    # The ticker ran throughout: a blocking call would make it miss a whole
    # pg_sleep (>= 50 ms). 20 ms is the bound, held by the lag the
    # code caused; the wall-clock lag also counts the time a loaded machine
    # kept the runnable thread off the CPU and the test process's garbage
    # collections (see LagMeter).
    assert lag.worst_own < 0.020
    assert len(lag.lags) >= 20
    assert (stats.connections, stats.checkouts, stats.in_use) == (5, 50, 0)


def test_every_backend_terminated_is_replaced_at_checkout(observer: Observer) -> None:
    async def scenario() -> sp.PoolStats:
        async with async_pool(
            {**conninfo_of("default"), "application_name": "async-kill"},
            pool_size=5,
            max_overflow=0,
            health_check_interval=None,
        ) as pool:
            await pool.wait(timeout=10)
            before = set(observer.connections_of("async-kill"))
            assert len(before) == 5
            observer.terminate(sorted(before))
            results = await asyncio.gather(
                *(sp.aexecute(pool, "SELECT pg_backend_pid()") for _ in range(20))
            )
            assert {pid for ((pid,),) in (r.rows for r in results)}.isdisjoint(before)
            return sp.pool_stats(pool)

    stats = asyncio.run(scenario())
    # Each dead connection was seen at checkout (nobody else looked: the
    # sweep is off) and replaced; none reached a query.
    assert stats.connections_replaced == 5
    assert stats.checkouts == 20


def test_a_task_cancelled_mid_query_returns_a_clean_connection(
    observer: Observer,
) -> None:
    async def scenario() -> None:
        async with async_pool(
            {**conninfo_of("default"), "application_name": "async-cancel"},
            pool_size=1,
            max_overflow=0,
        ) as pool:
            query = asyncio.create_task(sp.aexecute(pool, "SELECT pg_sleep(30)"))
            await until(lambda: _active(observer, "async-cancel") == 1)
            started = time.monotonic()
            query.cancel()
            with pytest.raises(asyncio.CancelledError):
                await query
            # psycopg cancelled the query on the server: no 30 s wait.
            assert time.monotonic() - started < 5
            stats = sp.pool_stats(pool)
            assert (stats.in_use, stats.idle, stats.connections) == (0, 1, 1)
            assert _active(observer, "async-cancel") == 0
            async with sp.awith_connection(pool) as conn:
                assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                assert conn.autocommit
            assert (await sp.aexecute(pool, "SELECT 1")).rows == [(1,)]

    asyncio.run(scenario())


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="Python 3.10 has no Task.cancelling()"
)
def test_a_task_cancelled_as_it_gets_a_connection_is_cancelled(
    transactional_db: None,
) -> None:
    """Cancelled while the pool hands it a connection, a waiting task raises
    CancelledError and the connection goes back: asyncio.wait_for (in
    psycopg_pool's wait) returns the connection instead before Python 3.12."""

    async def scenario() -> list[str]:
        outcomes = []
        async with async_pool(
            conninfo_of("default"), pool_size=1, max_overflow=0
        ) as pool:
            for steps in range(6):  # every interleaving of the handover
                held = await sp.acheckout(pool)
                waiter = asyncio.create_task(sp.acheckout(pool, timeout=10))
                await until(lambda: sp.pool_stats(pool).waiting == 1)
                await sp.acheckin(pool, held)
                for _ in range(steps):
                    await asyncio.sleep(0)
                waiter.cancel()
                try:
                    conn = await waiter
                except asyncio.CancelledError:
                    outcomes.append("cancelled")
                else:
                    outcomes.append("served")
                    await sp.acheckin(pool, conn)
                await until(lambda: sp.pool_stats(pool).idle == 1)
                assert sp.pool_stats(pool).in_use == 0
        return outcomes

    outcomes = asyncio.run(scenario())
    # Once the waiter has run with its connection, a cancellation comes too
    # late and it is served; before that, it must be cancelled, never served.
    assert "cancelled" in outcomes
    first_served = outcomes.index("served") if "served" in outcomes else 6
    assert outcomes[:first_served] == ["cancelled"] * first_served
    assert all(o == "served" for o in outcomes[first_served:])


def test_a_task_cancelled_inside_a_transaction_rolls_it_back(
    transactional_db: None,
) -> None:
    async def scenario() -> None:
        async with async_pool(conninfo_of("default"), pool_size=1) as pool:
            await sp.aexecute(pool, "CREATE TABLE IF NOT EXISTS cancelled (n int)")
            entered = asyncio.Event()

            async def write_then_wait() -> None:
                async with sp.atransaction(pool) as conn:
                    await conn.execute("INSERT INTO cancelled VALUES (1)")
                    entered.set()
                    await asyncio.sleep(30)

            task = asyncio.create_task(write_then_wait())
            await entered.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await sp.aexecute(pool, "SELECT count(*) FROM cancelled")).rows == [
                (0,)
            ]
            assert sp.pool_stats(pool).in_use == 0
            await sp.aexecute(pool, "DROP TABLE cancelled")

    asyncio.run(scenario())


# -- configure ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        {"pool_size": -1},
        {"checkout_timeout": "soon"},
        {"max_lifetime": 10**9},
        {"pool_sizes": 3},
        {"control": True},
        {"pool_size": 0, "max_overflow": 0},
        {"max_waiting": -1},
        {"num_workers": 1000},
        {"reconnect_timeout": "nan"},
        {"check": "sometimes"},
        {"reset": "everything"},
        {"login_retry_max": 0.5},
    ],
)
def test_bad_options_are_refused_as_by_start_pool(options: dict[str, Any]) -> None:
    """The same validation and messages, naming the function called."""
    with pytest.raises(ImproperlyConfigured) as sync:
        sp.start_pool("host=127.0.0.1", **options)
    with pytest.raises(ImproperlyConfigured) as from_async:
        asyncio.run(sp.astart_pool("host=127.0.0.1", **options))
    assert "astart_pool()" in str(from_async.value)
    assert str(from_async.value) == str(sync.value).replace(
        "start_pool()", "astart_pool()"
    )


def test_an_unknown_adapter_is_refused_naming_the_allowed_ones() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        asyncio.run(
            sp.astart_pool("oracle://app:hunter2@127.0.0.1/app", adapter="oracle")
        )
    message = str(info.value)
    assert "astart_pool() adapter = 'oracle' is invalid" in message
    assert "'postgresql' or 'mysql'" in message
    assert "hunter2" not in message


def test_psycopg_pools_options_apply_as_with_start_pool(
    transactional_db: None,
) -> None:
    """max_waiting, num_workers, check and reconnect_timeout reach
    psycopg_pool, as start_pool()'s do (the async pool ignored them)."""
    checked: list[int] = []

    async def check(conn: Any) -> None:
        checked.append(conn.info.backend_pid)
        await conn.execute("")

    async def scenario() -> None:
        async with async_pool(
            conninfo_of("default"),
            pool_size=1,
            max_overflow=0,
            max_waiting=1,
            num_workers=2,
            check=check,
        ) as pool:
            assert (pool.num_workers, pool.reconnect_timeout) == (2, math.inf)
            held = await sp.acheckout(pool)
            assert checked == [held.info.backend_pid]
            waiter = asyncio.create_task(sp.acheckout(pool, timeout=5))
            await until(lambda: sp.pool_stats(pool).waiting == 1)
            with pytest.raises(psycopg_pool.TooManyRequests):
                await sp.acheckout(pool)
            await sp.acheckin(pool, held)
            await sp.acheckin(pool, await waiter)
            assert len(checked) == 2
        async with async_pool(conninfo_of("default"), check=True) as pool:
            assert pool._check is psycopg_pool.AsyncConnectionPool.check_connection
            assert (await sp.aexecute(pool, "SELECT 1")).rows == [(1,)]
        async with async_pool(conninfo_of("default"), reconnect_timeout=60) as pool:
            assert pool.reconnect_timeout == 60

    asyncio.run(scenario())


def test_a_refused_login_is_reported_without_the_password(
    transactional_db: None,
) -> None:
    info = {**conninfo_of("default"), "password": "wrong-password-xyz"}
    with pytest.raises(PoolStartError) as excinfo:
        asyncio.run(sp.astart_pool(info, pool_size=1))
    message = str(excinfo.value)
    assert "password authentication failed" in message
    assert "wrong-password-xyz" not in message
    assert conninfo_of("default")["password"] not in message
    assert excinfo.value.__cause__ is None and excinfo.value.__context__ is None


def test_a_malformed_connection_string_is_not_echoed() -> None:
    with pytest.raises(ImproperlyConfigured) as excinfo:
        asyncio.run(sp.astart_pool("host=x passwordsekrit-value"))
    assert "sekrit-value" not in str(excinfo.value)


def test_aliases_and_sync_pools_are_refused_with_a_pointer(
    transactional_db: None,
) -> None:
    with pytest.raises(
        TypeError, match=r"not a database alias \('default'\).*sync_to_async"
    ):
        asyncio.run(sp.aexecute("default", "SELECT 1"))  # type: ignore[arg-type]
    sync_pool = sp.start_pool(conninfo_of("default"), pool_size=1)
    try:
        with pytest.raises(TypeError, match="use the sync functions"):
            asyncio.run(sp.aexecute(sync_pool, "SELECT 1"))  # type: ignore[arg-type]
    finally:
        sp.stop_pool(sync_pool)

    async def scenario() -> sp.AsyncSelectoPool:
        return await sp.astart_pool(conninfo_of("default"), pool_size=1)

    pool = asyncio.run(scenario())
    with pytest.raises(TypeError, match="async pool from astart_pool"):
        sp.execute(pool, "SELECT 1")  # type: ignore[arg-type]
    shutdown.stop_pools([pool])


# -- use ---------------------------------------------------------------------------
def test_checkout_transaction_and_connection_blocks(transactional_db: None) -> None:
    async def scenario() -> None:
        async with async_pool(conninfo_of("default"), pool_size=2) as pool:
            await sp.aexecute(pool, "CREATE TABLE IF NOT EXISTS notes (n int)")
            conn = await sp.acheckout(pool)
            try:
                assert isinstance(conn, psycopg.AsyncConnection) and conn.autocommit
                assert sp.pool_stats(pool).in_use == 1
            finally:
                await sp.acheckin(pool, conn)
            with pytest.raises(ValueError, match="not checked out"):
                await sp.acheckin(pool, conn)

            async def write(conn: psycopg.AsyncConnection[Any]) -> str:
                await conn.execute("INSERT INTO notes VALUES (1)")
                return "done"

            assert await sp.atransaction(pool, write) == "done"
            with pytest.raises(LookupError):
                async with sp.atransaction(pool) as conn:
                    await conn.execute("INSERT INTO notes VALUES (2)")
                    raise LookupError
            async with sp.awith_connection(pool) as conn:
                await conn.set_autocommit(False)
                await conn.execute("INSERT INTO notes VALUES (3)")  # not committed

            async def count(conn: psycopg.AsyncConnection[Any]) -> Any:
                cursor = await conn.execute("SELECT array_agg(n) FROM notes")
                return await cursor.fetchone()

            assert await sp.awith_connection(pool, count) == ([1],)
            stats = sp.pool_stats(pool)
            assert (stats.rollbacks_on_return, stats.in_use) == (1, 0)
            result = await sp.aexecute(pool, "DELETE FROM notes WHERE n = %s", [1])
            assert (result.rows, result.rowcount, result.status) == ([], 1, "DELETE 1")
            await sp.aexecute(pool, "DROP TABLE notes")

    asyncio.run(scenario())


def test_an_exhausted_pool_times_out_clearly(transactional_db: None) -> None:
    async def scenario() -> None:
        async with async_pool(
            conninfo_of("default"), pool_size=1, max_overflow=0, checkout_timeout=0.3
        ) as pool:
            held = await sp.acheckout(pool)
            waiter = asyncio.create_task(sp.acheckout(pool, timeout=5))
            await until(lambda: sp.pool_stats(pool).waiting == 1)
            started = time.monotonic()
            with pytest.raises(CheckoutTimeout) as info:
                await sp.acheckout(pool)
            # checkout_timeout, then up to 1 s for a loaded machine.
            assert 0.3 <= time.monotonic() - started < 1.3
            message = str(info.value)
            assert pool.name in message and "1 in use of pool_size 1" in message
            assert "1 other client(s) waiting" in message
            await sp.acheckin(pool, held)
            await sp.acheckin(pool, await waiter)
            stats = sp.pool_stats(pool)
            assert (stats.checkout_timeouts, stats.waiting, stats.in_use) == (1, 0, 0)

    asyncio.run(scenario())


def test_a_leaked_connection_is_reported_with_its_task(
    transactional_db: None, caplog: pytest.LogCaptureFixture
) -> None:
    async def hold(pool: sp.AsyncSelectoPool) -> None:
        conn = await sp.acheckout(pool)
        await asyncio.sleep(0.6)
        await sp.acheckin(pool, conn)

    async def scenario() -> sp.PoolStats:
        async with async_pool(
            conninfo_of("default"), pool_size=1, leak_detection_threshold=0.2
        ) as pool:
            await asyncio.create_task(hold(pool), name="forgetful-view")
            return sp.pool_stats(pool)

    with caplog.at_level(logging.WARNING, logger="selecto_pool.pool"):
        stats = asyncio.run(scenario())
    assert stats.leaks == 1
    reports = [r.getMessage() for r in caplog.records]
    [report] = [message for message in reports if "not been returned" in message]
    assert "by task 'forgetful-view'" in report
    assert "in hold" in report  # the stack that checked it out


def _active(observer: Observer, application_name: str) -> int:
    return int(
        observer.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND state = 'active'",
            [application_name],
        )
    )
