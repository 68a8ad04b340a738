"""Load and cancellation: many threads on few connections, cancelled queries.

Against the suite's test database. The figures are printed (``-s``) and
quoted in docs/reliability.md.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from django.db import OperationalError, connections

import selecto_pool as sp

from .support.clients import join_all, run_clients, wait_for
from .support.database import (
    Observer,
    conninfo_of,
    thread_wrappers,
    wrapper_for_settings,
)


# -- many threads, few connections --------------------------------------------------
@pytest.mark.slow
def test_200_threads_on_15_connections(observer: Observer) -> None:
    application_name = "selecto-load"
    base = connections["default"].settings_dict
    settings_dict = {
        **base,
        "OPTIONS": {
            "application_name": application_name,
            "pool": {"pool_size": 10, "max_overflow": 5, "checkout_timeout": 10},
        },
    }
    observer.conn.execute("CREATE TABLE load_ledger (client int, n int)")
    wrappers = thread_wrappers(settings_dict, "load", 200)
    pool = wrappers[0].pool
    assert pool is not None
    duration = 10.0

    def request(client: int, n: int) -> None:
        kind = (client + n) % 4
        if kind == 3:  # the direct API, on the very same pool
            sp.execute(
                pool, "SELECT count(*) FROM load_ledger WHERE client = %s", [client]
            )
            return
        wrapper = wrappers[client]
        try:
            if kind == 2:
                wrapper.set_autocommit(False)
            with wrapper.cursor() as cursor:
                if kind == 0:
                    cursor.execute("SELECT count(*) FROM load_ledger")
                elif kind == 1:
                    cursor.execute("SELECT pg_sleep(0.005)")
                else:
                    cursor.execute(
                        "INSERT INTO load_ledger VALUES (%s, %s)", [client, n]
                    )
            if kind == 2:
                wrapper.commit()
        finally:
            wrapper.close()

    seen_on_server: list[int] = []
    stop = threading.Event()
    watching = threading.Event()

    def watch() -> None:
        with psycopg.connect(**conninfo_of("default"), autocommit=True) as conn:
            while not watching.is_set():
                seen_on_server.append(
                    conn.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE application_name = %s",
                        [application_name],
                    ).fetchone()[0]
                )
                time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        outcomes, threads = run_clients(200, request, stop)
        time.sleep(duration)
        stop.set()
        join_all(threads, timeout=30)
        stats = pool.stats()
    finally:
        stop.set()
        watching.set()
        watcher.join(10)
        for wrapper in wrappers:
            wrapper.close()
        wrappers[0].close_pool()
        observer.conn.execute("DROP TABLE load_ledger")

    errors = Counter(o.error for results in outcomes for o in results if not o.ok)
    assert not errors, errors
    done = sorted(len(results) for results in outcomes)
    mean = sum(done) / len(done)
    print(
        f"\nload: 200 threads, {sum(done)} requests in {duration:.0f} s "
        f"({sum(done) / duration:.0f}/s); per thread min {done[0]}, median "
        f"{done[100]}, max {done[-1]}; server connections max {max(seen_on_server)} "
        f"({len(seen_on_server)} samples); checkout wait p50 "
        f"{stats.checkout_wait_p50_ms} ms, p99 {stats.checkout_wait_p99_ms} ms"
    )
    assert max(seen_on_server) <= 15
    assert stats.connections <= 15
    assert stats.in_use == 0 and stats.waiting == 0
    assert stats.checkout_timeouts == 0
    # Fair waits: psycopg_pool serves waiting clients first come, first served.
    assert done[0] >= 0.5 * mean, "a thread was starved"


# -- cancelled queries --------------------------------------------------------------
def cancel_when_running(observer: Observer, backend: int) -> threading.Thread:
    def cancel() -> None:
        wait_for(
            lambda: observer.scalar(
                "SELECT state = 'active' AND query LIKE '%%pg_sleep(5)%%'"
                " FROM pg_stat_activity WHERE pid = %s",
                [backend],
            ),
            timeout=5,
        )
        observer.scalar("SELECT pg_cancel_backend(%s)", [backend])

    canceller = threading.Thread(target=cancel)
    canceller.start()
    return canceller


def sleep_in_a_transaction(how: str, execute: Callable[[str], Any]) -> None:
    if how == "statement_timeout":
        execute("SET LOCAL statement_timeout = '100ms'")
    execute("SELECT pg_sleep(5)")


@pytest.mark.parametrize("how", ["statement_timeout", "pg_cancel_backend"])
@pytest.mark.parametrize("api", ["direct", "orm"])
def test_a_cancelled_query_leaves_the_connection_usable(
    observer: Observer, how: str, api: str
) -> None:
    settings_dict = {
        **connections["default"].settings_dict,
        "OPTIONS": {"pool": {"pool_size": 1, "max_overflow": 0, "control": False}},
    }
    wrapper = wrapper_for_settings(settings_dict, "cancel")
    pool = wrapper.pool
    assert pool is not None
    pool.open()
    try:
        backend = sp.execute(pool, "SELECT pg_backend_pid()").rows[0][0]
        canceller = (
            cancel_when_running(observer, backend)
            if how == "pg_cancel_backend"
            else None
        )
        started = time.monotonic()
        if api == "direct":
            with (
                pytest.raises(psycopg.errors.QueryCanceled),
                sp.transaction(pool) as conn,
            ):
                sleep_in_a_transaction(how, conn.execute)
        else:
            try:
                wrapper.set_autocommit(False)  # as transaction.atomic() does
                with (
                    pytest.raises(OperationalError, match="cancel"),
                    wrapper.cursor() as cursor,
                ):
                    sleep_in_a_transaction(how, cursor.execute)
            finally:
                wrapper.close()  # back to the pool in a failed transaction
        cancelled_in = time.monotonic() - started
        if canceller is not None:
            canceller.join(5)

        stats = pool.stats()
        assert stats.in_use == 0 and stats.connections_replaced == 0
        assert sp.execute(pool, "SELECT pg_backend_pid()").rows == [(backend,)]
        assert sp.execute(pool, "SHOW statement_timeout").rows == [("0",)]
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            assert cursor.fetchone() == (backend,)
        wrapper.close()
        # Cancelled, not run to its end (pg_sleep(5) takes 5 s); half of that
        # leaves room for waiting for the CPU on a loaded machine.
        assert cancelled_in < 5 / 2
    finally:
        wrapper.close_pool()
