"""The sync direct API called from a running event loop: refused, as Django's ORM.

A sync call there blocks every task of the loop until the database answers
(issue #14: 159 requests in 6 s instead of 748). Django raises
``SynchronousOnlyOperation`` for the ORM in that case; so does the direct API,
unless ``DJANGO_ALLOW_ASYNC_UNSAFE`` is set, and ``sync_to_async`` works.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import SynchronousOnlyOperation

import selecto_pool as sp

from .support.database import conninfo_of

# Each takes the pool and a connection checked out from it beforehand.
CALLS: dict[str, Callable[[sp.SelectoPool, Any], Any]] = {
    "start_pool": lambda pool, _: sp.start_pool(conninfo_of("default"), pool_size=1),
    "stop_pool": lambda pool, _: sp.stop_pool(pool),
    "checkout": lambda pool, _: sp.checkout(pool),
    "checkin": lambda pool, held: sp.checkin(pool, held),
    "execute": lambda pool, _: sp.execute(pool, "SELECT 1"),
    "with_connection": lambda pool, _: sp.with_connection(pool),
    "transaction": lambda pool, _: sp.transaction(pool),
    "clear_cache": lambda pool, _: sp.clear_cache(pool),
}


@pytest.fixture
def pool(transactional_db: None) -> Iterator[sp.SelectoPool]:
    pool = sp.start_pool(conninfo_of("default"), pool_size=1, checkout_timeout=1)
    yield pool
    sp.stop_pool(pool, timeout=1)


@pytest.mark.parametrize("name", CALLS)
def test_a_sync_call_in_a_running_loop_is_refused(
    pool: sp.SelectoPool, name: str
) -> None:
    held = sp.checkout(pool, timeout=5)

    async def view() -> Any:
        return CALLS[name](pool, held)

    with pytest.raises(SynchronousOnlyOperation) as info:
        asyncio.run(view())
    message = str(info.value)
    assert f"{name}() blocks the event loop" in message
    assert f"await a{name}()" in message and "sync_to_async" in message
    # Refused before doing anything: nothing checked out, returned or stopped.
    stats = sp.pool_stats(pool)
    assert (stats.in_use, stats.checkouts, stats.closed) == (1, 1, False)
    sp.checkin(pool, held)


def test_through_sync_to_async_or_when_allowed_it_runs(
    pool: sp.SelectoPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def view() -> Any:
        stats = sp.pool_stats(pool)  # reads counters only: allowed
        result = await sync_to_async(sp.execute)(pool, "SELECT %s::int", [1])
        return stats, result

    stats, result = asyncio.run(view())
    assert result.rows == [(1,)] and stats.name == pool.name

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")

    async def allowed() -> Any:
        return sp.execute(pool, "SELECT 2")

    assert asyncio.run(allowed()).rows == [(2,)]
