"""The async MySQL API used carelessly: a connection used or given back while
a call runs or after it went back, and the pool stopped under waiting tasks.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import selecto_pool as sp
from selecto_pool import AsyncMySQLPool, ConnectionReturned, PoolClosed
from testproject.mariaserver import LocalMariaDB

from ..support.aio import until
from ..support.processes import report_from_fork


@pytest.fixture
def kwargs(mariadb_server: LocalMariaDB, database: str) -> dict[str, Any]:
    return mariadb_server.connect_kwargs(database)


def pool_threads(name: str) -> list[str]:
    prefix = f"selecto_pool[{name}]"
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


async def session(pool: AsyncMySQLPool) -> Any:
    return (await sp.aexecute(pool, "SELECT CONNECTION_ID()")).rows[0][0]


def test_a_connection_given_back_refuses_every_call(kwargs: dict[str, Any]) -> None:
    """Its session is someone else's now: a stale proxy must not reach it."""

    async def scenario() -> None:
        pool = await sp.astart_pool(
            kwargs, adapter="mysql", pool_size=1, max_overflow=0
        )
        stale = await sp.acheckout(pool)
        cursor = stale.cursor()
        await sp.acheckin(pool, stale)
        holder = await sp.acheckout(pool)
        assert holder.raw is stale.raw  # the very session, in other hands
        for call in (
            lambda: cursor.execute("SELECT 1"),
            lambda: stale.cursor().execute("SELECT 1"),
            stale.commit,
            lambda: stale.run_sync(lambda raw: raw.ping()),
        ):
            with pytest.raises(ConnectionReturned, match="given back"):
                await call()
        await cursor.close()  # closing is harmless, as for a closed cursor
        await sp.acheckin(pool, holder)
        await sp.astop_pool(pool)
        # And after the pool stopped: the same error, not the threads' own.
        with pytest.raises(ConnectionReturned):
            await stale.rollback()

    asyncio.run(scenario())


def test_checkin_while_a_call_runs_waits_for_it(kwargs: dict[str, Any]) -> None:
    """Given back mid-query (a task left running): the query ends as it
    would, then the connection goes back whole; it is never reset, closed
    or handed out under the running thread."""

    async def scenario() -> None:
        pool = await sp.astart_pool(
            kwargs, adapter="mysql", pool_size=1, max_overflow=0
        )
        try:
            first = await session(pool)
            conn = await sp.acheckout(pool)
            cursor = conn.cursor()
            running = asyncio.create_task(cursor.execute("SELECT SLEEP(0.5)"))
            await asyncio.sleep(0.1)
            await sp.acheckin(pool, conn)
            assert await session(pool) == first  # the same connection, reused
            assert await running == 1  # ended as it would have
            with pytest.raises(ConnectionReturned):
                await cursor.fetchall()
            stats = sp.pool_stats(pool)
            assert (stats.connections_replaced, stats.in_use) == (0, 0)
        finally:
            await sp.astop_pool(pool)

    asyncio.run(scenario())


def test_astop_pool_under_waiting_checkouts(kwargs: dict[str, Any]) -> None:
    """Tasks waiting (in the pool's threads and in the loop) when the pool
    stops get PoolClosed at once, not a thread pool's RuntimeError nor a
    timeout; a connection handed out meanwhile still goes back."""

    async def scenario() -> None:
        pool = await sp.astart_pool(
            kwargs, adapter="mysql", pool_size=1, max_overflow=0, checkout_timeout=10
        )
        held = await sp.acheckout(pool)
        waiters = [asyncio.create_task(sp.acheckout(pool)) for _ in range(4)]
        await asyncio.sleep(0.1)

        async def give_back() -> None:
            await asyncio.sleep(0.2)
            await sp.acheckin(pool, held)

        started = time.monotonic()
        await asyncio.gather(
            give_back(), sp.astop_pool(pool, timeout=1), sp.astop_pool(pool)
        )
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        assert time.monotonic() - started < 5
        served = [out for out in outcomes if isinstance(out, sp.AsyncMySQLConnection)]
        refused = [out for out in outcomes if isinstance(out, PoolClosed)]
        assert len(served) + len(refused) == 4, outcomes
        for conn in served:
            await sp.acheckin(pool, conn)
        assert pool.closed and sp.pool_stats(pool).connections == 0
        with pytest.raises(PoolClosed):
            await sp.acheckout(pool)
        await until(lambda: not pool_threads(pool.name))  # its threads ended

    asyncio.run(scenario())


def test_an_unbuffered_cursor_given_back_unread(kwargs: dict[str, Any]) -> None:
    """Its rows still coming, the connection can't serve anyone: it is
    replaced, not pooled (every later query failed "Commands out of sync")."""
    import MySQLdb.cursors

    async def scenario() -> None:
        pool = await sp.astart_pool(
            kwargs, adapter="mysql", pool_size=1, max_overflow=0
        )
        try:
            async with sp.awith_connection(pool) as conn:
                cursor = conn.cursor(MySQLdb.cursors.SSCursor)
                await cursor.execute("SELECT SLEEP(0.2), seq FROM seq_1_to_3")
            assert (await sp.aexecute(pool, "SELECT 8")).rows == [(8,)]
            assert sp.pool_stats(pool).connections_replaced == 1
        finally:
            await sp.astop_pool(pool)

    asyncio.run(scenario())


def test_a_forked_child_cant_use_or_close_the_parents_pool(
    kwargs: dict[str, Any],
) -> None:
    """In a child, a call on a connection the parent holds is PoolClosed at
    once (the pool's threads are the parent's: it used to wait forever);
    giving it back or stopping the pool leave the parent's sessions alone,
    as stop_pool() does in a child."""

    async def in_child(pool: AsyncMySQLPool, conn: sp.AsyncMySQLConnection) -> Any:
        report: dict[str, str] = {}
        for name, call in (
            ("aexecute", lambda: sp.aexecute(pool, "SELECT 1")),
            ("call", lambda: conn.run_sync(lambda raw: raw.ping())),
            ("acheckin", lambda: sp.acheckin(pool, conn)),
            ("astop_pool", lambda: sp.astop_pool(pool)),
        ):
            try:
                await asyncio.wait_for(call(), 5)
                report[name] = "ok"
            except Exception as exc:  # reported to the parent
                report[name] = type(exc).__name__
        return report

    async def scenario() -> None:
        pool = await sp.astart_pool(
            kwargs, adapter="mysql", pool_size=2, max_overflow=0
        )
        try:
            conn = await sp.acheckout(pool)
            report = report_from_fork(lambda: asyncio.run(in_child(pool, conn)))
            assert report == {
                "aexecute": "PoolClosed",
                "call": "PoolClosed",
                "acheckin": "ok",
                "astop_pool": "ok",
            }
            # The parent's session and pool are untouched.
            assert await conn.run_sync(lambda raw: raw.thread_id()) == conn.thread_id
            await conn.run_sync(lambda raw: raw.ping())
            await sp.acheckin(pool, conn)
            assert (await sp.aexecute(pool, "SELECT 1")).rows == [(1,)]
        finally:
            await sp.astop_pool(pool)

    asyncio.run(scenario())


def test_a_pool_whose_loop_closed_can_be_stopped_from_another(
    kwargs: dict[str, Any],
) -> None:
    """Its loop closed with connections out (a test's loop, say): the pool
    can't be used from another loop, but it can be stopped, closing its
    connections instead of leaving them open until the process ends."""
    loop = asyncio.new_event_loop()
    pool = loop.run_until_complete(
        sp.astart_pool(kwargs, adapter="mysql", pool_size=2, max_overflow=0)
    )
    loop.run_until_complete(sp.acheckout(pool))
    loop.close()

    async def elsewhere() -> None:
        with pytest.raises(RuntimeError, match="belongs to the event loop"):
            await sp.aexecute(pool, "SELECT 1")
        await sp.astop_pool(pool, timeout=0.2)

    asyncio.run(elsewhere())
    assert pool.closed
    stats = sp.pool_stats(pool)
    assert (stats.connections, stats.in_use) == (0, 0)
