"""Stopping an async pool at interpreter exit, where nothing can be awaited.

``atexit`` callbacks are sync: a pool whose event loop still runs (in
another thread) is stopped there, draining as ``astop_pool()`` does; once the
loop is gone nobody can use the connections any more, and they are closed
from the exiting thread.
"""

from __future__ import annotations

import asyncio
import logging

from .async_pool import AsyncSelectoPool

logger = logging.getLogger("selecto_pool.pool")


def stop_at_exit(pool: AsyncSelectoPool, timeout: float) -> None:
    """``pool.stop(timeout)``, from a thread that can't await."""
    loop = pool.loop
    if loop is None or not loop.is_running() or loop.is_closed():
        pool.close_connections_now()
        return
    if running_loop() is loop:
        # Called from a callback of that very loop: it can't wait for itself.
        logger.warning("pool %r is open at exit: astop_pool() it", pool.name)
        return
    future = asyncio.run_coroutine_threadsafe(pool.stop(timeout), loop)
    try:
        future.result(timeout + 1.0)
    except Exception as exc:
        # Its connections may be in use in that loop: left to the process's
        # exit rather than closed under its feet.
        logger.warning(
            "pool %r could not be stopped in its event loop at exit: %r",
            pool.name,
            exc,
        )


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
