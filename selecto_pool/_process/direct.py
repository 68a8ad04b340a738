"""The direct API's pools as the process's operations see them.

``poolstats``, ``clearcache`` and the metrics show the pools of
``start_pool()`` and ``astart_pool()`` next to the ORM's, under a label of
their own (``label()``: their name, made unique within the process), and
clear their statement caches. An async pool's coroutines run in its own
event loop: another thread (the control responder, a command) hands them
over with ``run_coroutine_threadsafe`` and waits a bounded time.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import TimeoutError as FutureTimeout

from .._pool.async_exit import running_loop
from .._pool.async_pool import AsyncSelectoPool
from .._pool.stats import PoolStats
from . import registry
from .registry import DirectPool

logger = logging.getLogger("selecto_pool.pool")

#: What a direct pool's row shows where an alias's would (``poolstats``).
ROW_PREFIX = "direct:"
#: The longest wait for an async pool's loop to clear its caches.
CLEAR_TIMEOUT = 5.0


def labelled() -> list[tuple[str, DirectPool]]:
    """This process's open direct pools, each with a unique label: its name,
    or ``name#2``... for later pools of the same name (by start time)."""
    pools = sorted(
        registry.direct_pools(), key=lambda pool: (pool.name, pool.started_at)
    )
    labels: list[tuple[str, DirectPool]] = []
    seen: dict[str, int] = {}
    for pool in pools:
        seen[pool.name] = seen.get(pool.name, 0) + 1
        count = seen[pool.name]
        labels.append((pool.name if count == 1 else f"{pool.name}#{count}", pool))
    return labels


def stats() -> list[tuple[str, PoolStats]]:
    """(label, stats) of each open direct pool: counters only, no I/O."""
    return [(label, pool.stats()) for label, pool in labelled()]


def clear_all() -> list[tuple[str, int]]:
    """Clear every direct pool's statement caches: (label, connections)."""
    cleared = []
    for label, pool in labelled():
        try:
            count = clear(pool)
        except Exception as exc:  # closed meanwhile, the server gone...
            logger.warning(
                "pool %r: clearing its statement caches failed: %s: %s",
                pool.name,
                type(exc).__name__,
                exc,
            )
            count = 0
        cleared.append((label, count))
    return cleared


def clear(pool: DirectPool, timeout: float = CLEAR_TIMEOUT) -> int:
    """``pool.clear_prepared()`` from this thread; an async pool's in its loop.

    0 for an async pool whose loop doesn't run, or doesn't answer within
    ``timeout`` (the clear then still happens there, later).
    """
    if not isinstance(pool, AsyncSelectoPool):
        return pool.clear_prepared()
    loop = pool.loop
    if loop is None or loop.is_closed() or not loop.is_running():
        return 0
    if running_loop() is loop:
        # Called from that very loop: it can't wait for itself.
        loop.create_task(pool.clear_prepared())
        return 0
    future = asyncio.run_coroutine_threadsafe(pool.clear_prepared(), loop)
    try:
        return future.result(timeout)
    except FutureTimeout:
        logger.warning(
            "pool %r: its event loop did not clear the statement caches within "
            "%g s (busy or blocked?); they are cleared when it gets to it",
            pool.name,
            timeout,
        )
        return 0
