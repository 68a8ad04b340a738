"""An async pool's life: stopped, left open at exit, used from other loops,
threads and forked children."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import traceback
from typing import Any

import pytest

import selecto_pool as sp
from selecto_pool import PoolClosed
from selecto_pool._process import registry, shutdown

from .support.clients import wait_for
from .support.database import Observer, conninfo_of


def test_stop_drains_then_refuses(transactional_db: None) -> None:
    async def scenario() -> None:
        pool = await sp.astart_pool(conninfo_of("default"), pool_size=1)
        conn = await sp.acheckout(pool)
        returned_at: list[float] = []

        async def finish_work() -> None:
            await asyncio.sleep(0.3)
            returned_at.append(time.monotonic())
            await sp.acheckin(pool, conn)

        worker = asyncio.create_task(finish_work())
        await sp.astop_pool(pool, timeout=5)
        assert returned_at and time.monotonic() >= returned_at[0]
        await worker
        assert pool.closed
        with pytest.raises(PoolClosed):
            await sp.acheckout(pool)
        late = await sp.astart_pool(conninfo_of("default"), pool_size=1)
        conn = await sp.acheckout(late)
        started = time.monotonic()
        await sp.astop_pool(late, timeout=0.2)
        assert 0.2 <= time.monotonic() - started < 1.5
        await sp.acheckin(late, conn)  # late: closed instead of pooled
        assert conn.closed

    asyncio.run(scenario())


def test_a_pool_closed_by_hand_refuses_to_reopen_with_the_way_out(
    transactional_db: None,
) -> None:
    """``close()`` rather than ``astop_pool()``: reopening says what builds a
    new pool, with every psycopg_pool release (its own error changed class)."""

    async def scenario() -> None:
        pool = await sp.astart_pool(conninfo_of("default"), pool_size=1)
        await pool.close()
        with pytest.raises(PoolClosed, match="stop_pool"):
            await pool.open()

    asyncio.run(scenario())


def test_a_pool_serves_only_the_loop_that_started_it(transactional_db: None) -> None:
    async def start() -> sp.AsyncSelectoPool:
        return await sp.astart_pool(conninfo_of("default"), pool_size=1)

    pool = asyncio.run(start())
    try:
        with pytest.raises(RuntimeError, match="belongs to the event loop"):
            asyncio.run(sp.aexecute(pool, "SELECT 1"))
    finally:
        shutdown.stop_pools([pool])


def test_a_forked_child_cannot_use_its_parents_pool(transactional_db: None) -> None:
    loop = asyncio.new_event_loop()
    pool = loop.run_until_complete(sp.astart_pool(conninfo_of("default"), pool_size=1))
    try:
        loop.run_until_complete(pool.wait(timeout=10))
        read_fd, write_fd = os.pipe()
        child = os.fork()
        if child == 0:
            _in_child(write_fd, pool)
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            report = json.loads(pipe.read() or "{}")
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert report["error"] == "PoolClosed"
        assert "belongs to process" in report["message"]
        # The parent's connection was left alone by the child.
        result = loop.run_until_complete(sp.aexecute(pool, "SELECT 1"))
        assert result.rows == [(1,)]
    finally:
        loop.run_until_complete(sp.astop_pool(pool))
        loop.close()


def _in_child(write_fd: int, pool: sp.AsyncSelectoPool) -> None:
    """Runs in the forked child; reports through the pipe, never returns."""
    status = 1
    try:
        try:
            asyncio.run(sp.aexecute(pool, "SELECT 1"))
            report = {"error": None, "message": ""}
        except PoolClosed as exc:
            report = {"error": "PoolClosed", "message": str(exc)}
        os.write(write_fd, json.dumps(report).encode())
        status = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(status)


def test_a_pool_left_open_is_closed_at_exit_and_listed_meanwhile(
    observer: Observer,
) -> None:
    async def scenario() -> sp.AsyncSelectoPool:
        pool = await sp.astart_pool(
            {**conninfo_of("default"), "application_name": "async-exit"},
            pool_size=2,
            name="left-open",
        )
        await pool.wait(timeout=10)
        return pool

    pool = asyncio.run(scenario())  # the loop is gone, the pool still open
    assert pool in registry.direct_pools()
    assert pool.stats().connections == 2 and sp.pool_stats(pool).name == "left-open"
    assert len(observer.connections_of("async-exit")) == 2
    shutdown.stop_pools([pool])  # what the interpreter's exit runs
    wait_for(lambda: not observer.connections_of("async-exit"), timeout=10)


def test_the_loop_ends_while_connections_are_being_opened(
    transactional_db: None,
) -> None:
    """``asyncio.run()`` returning with the pool open and filling: it cancels
    every task, and psycopg_pool's workers catch the cancellation of a
    connection attempt; with psycopg_pool's own async pool it never returns."""

    async def scenario() -> sp.AsyncSelectoPool:
        return await sp.astart_pool(conninfo_of("default"), pool_size=5)

    ended = threading.Event()
    pools: list[sp.AsyncSelectoPool] = []
    runner = threading.Thread(
        target=lambda: (pools.append(asyncio.run(scenario())), ended.set()),
        daemon=True,
    )
    runner.start()
    assert ended.wait(15), "asyncio.run() hangs"
    shutdown.stop_pools(pools)


def test_other_threads_reach_a_pool_through_its_loop(observer: Observer) -> None:
    """As a control channel or the exit hook do, from a thread of their own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def in_loop(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(10)

    info = {**conninfo_of("default"), "application_name": "async-threads"}
    pool = in_loop(sp.astart_pool(info, pool_size=2, name="served-elsewhere"))
    try:
        assert pool.loop is loop
        in_loop(pool.wait(timeout=10))
        for _ in range(2):
            in_loop(sp.aexecute(pool, "SELECT %s::int", [1], prepare=True))
        assert sp.pool_stats(pool).cache_statements >= 1  # read from here
        assert in_loop(pool.clear_prepared()) == 2
        assert sp.pool_stats(pool).cache_statements == 0
        # At exit, a pool whose loop still runs is stopped in that loop.
        shutdown.stop_pools([pool])
        assert pool.closed
        wait_for(lambda: not observer.connections_of("async-threads"), timeout=10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
