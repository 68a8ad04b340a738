"""The async pool through a server restart: it recovers by itself, in time,
and neither its clients nor its reconnection attempts block the event loop.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import selecto_pool as sp
from testproject.pgserver import LocalPostgres

from .support.aio import LagMeter, async_pool, until
from .support.postgres import accepting_at, begin_fast_shutdown, stopped

CHECKOUT_TIMEOUT = 1.0
# The pool probes an unreachable server every 0.5 s and reconnects the rest at
# once when a probe connects (as the sync pool, docs/reliability.md), plus up
# to 1 s for connecting and the CPU on a loaded 2-core machine; psycopg_pool's
# own retries (1, 2, 4... s apart) would often take longer.
RECOVERY = 0.5 + 1.0


@pytest.mark.slow
def test_a_server_restart_is_recovered_from_without_blocking_the_loop(
    spare_server: LocalPostgres,
) -> None:
    # Clients stop at a flag, not by cancellation: on Python 3.10 a
    # cancellation that comes as a connection is handed over is lost (see
    # docs/limitations.md).
    running = [True]

    async def client(
        pool: sp.AsyncSelectoPool, log: list[tuple[float, float, bool]]
    ) -> None:
        while running[0]:
            started = time.monotonic()
            try:
                await sp.aexecute(pool, "SELECT 1", [])
            except Exception:
                log.append((started, time.monotonic(), False))
                await asyncio.sleep(0.01)
            else:
                log.append((started, time.monotonic(), True))
                await asyncio.sleep(0.005)

    async def scenario() -> tuple[
        float, list[tuple[float, float, bool]], LagMeter, sp.PoolStats
    ]:
        async with async_pool(
            spare_server.conninfo(),
            pool_size=3,
            max_overflow=2,
            checkout_timeout=CHECKOUT_TIMEOUT,
            name="async-restart",
        ) as pool:
            await pool.wait(timeout=10)
            log: list[tuple[float, float, bool]] = []
            clients = [asyncio.create_task(client(pool, log)) for _ in range(10)]
            # Stopped by a signal: pg_ctl would fork this (large) process,
            # and a fork holds the GIL that the loop's thread needs.
            async with LagMeter() as lag:
                await asyncio.sleep(0.5)
                begin_fast_shutdown(spare_server)
                while not stopped(spare_server):
                    await asyncio.sleep(0.01)
                await asyncio.sleep(1.5)  # 3 reconnect probes, failing calls
            accepted = accepting_at(spare_server)
            await asyncio.to_thread(spare_server.start)
            up = await asyncio.to_thread(accepted)
            async with LagMeter() as recovery_lag:
                await asyncio.sleep(RECOVERY + 1.0)
            lag.lags += recovery_lag.lags
            lag.own_lags += recovery_lag.own_lags
            running[0] = False
            await asyncio.gather(*clients)
            return up, log, lag, sp.pool_stats(pool)

    up, log, lag, stats = asyncio.run(scenario())
    failures = [(s, e) for s, e, ok in log if not ok]
    recovered = min(e for s, e, ok in log if ok and s > up) - up
    print(
        f"\nasync restart: served again {recovered:.3f} s after the server accepted; "
        f"{len(failures)} failed calls meanwhile, the slowest "
        f"{max((e - s for s, e in failures), default=0):.2f} s; event-loop lag "
        f"{lag.worst_own * 1000:.1f} ms without run-queue waits and collections "
        f"({lag.worst * 1000:.1f} ms wall)"
    )
    assert failures, "the outage went unnoticed"
    assert recovered < RECOVERY
    late = [s for s, e, ok in log if not ok and s > up + RECOVERY]
    assert not late, f"{len(late)} calls failed after the recovery time"
    # No call hangs on a dead socket or a connection attempt (5 s).
    assert max(e - s for s, e in failures) < CHECKOUT_TIMEOUT + 1.0
    # Failing and reconnecting never block the loop, during the outage and
    # after (the restart itself, a fork by pg_ctl, is not measured): a
    # checkout waiting in the loop would stall it for its timeout (1 s). The
    # bound leaves room for what a saturated 2-core machine adds besides the
    # run-queue wait (up to 37 ms measured, kernel work charged to the thread).
    assert lag.worst_own < 0.1
    assert stats.connection_errors >= 1


@pytest.mark.slow
def test_an_outage_longer_than_psycopg_pools_reconnect_timeout_heals_by_itself(
    spare_server: LocalPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the sync pool's (tests/test_outages.py): psycopg_pool gives a missing
    connection up after reconnect_timeout (5 minutes), after which only a
    checkout opened one again. Here psycopg_pool's clock jumps an hour."""
    import psycopg_pool.pool_async

    async def scenario() -> tuple[int, sp.PoolStats]:
        async with async_pool(
            spare_server.conninfo(),
            pool_size=2,
            max_overflow=0,
            health_check_interval=0.2,
            name="async-long-outage",
        ) as pool:
            await pool.wait(timeout=5)
            checkouts = sp.pool_stats(pool).checkouts
            await asyncio.to_thread(spare_server.stop)
            await until(lambda: sp.pool_stats(pool).connection_errors >= 2, 5)
            later = psycopg_pool.pool_async.monotonic
            monkeypatch.setattr(
                psycopg_pool.pool_async, "monotonic", lambda: later() + 3600
            )
            await asyncio.sleep(1.5)  # more probes fail (psycopg_pool gave up)
            await asyncio.to_thread(spare_server.start)
            await until(lambda: sp.pool_stats(pool).idle == 2, 5)
            return checkouts, sp.pool_stats(pool)

    checkouts, stats = asyncio.run(scenario())
    assert stats.checkouts == checkouts, "nobody asked for a connection"
