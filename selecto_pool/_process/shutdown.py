"""Interpreter exit: let checked-out connections come back, then close pools.

The registry registers ``stop_pools`` with ``atexit`` when the first pool is
created (never at import). Python runs ``atexit`` callbacks after it has
joined the non-daemon threads, while daemon threads still run, so a request
or job finishing in a daemon thread can still commit and return its
connection. Each pool waits up to its ``exit_timeout`` for that (all pools
against one deadline, not one after the other), then closes: idle
connections are closed properly (the server sees a goodbye, not a reset),
the pool's threads are stopped, and connections returned later are closed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .._pool.async_exit import stop_at_exit
from .._pool.async_pool import AsyncSelectoPool

if TYPE_CHECKING:
    from .._pool.abc import Pool

logger = logging.getLogger("selecto_pool.pool")


def stop_pools(pools: Iterable[Pool | AsyncSelectoPool]) -> None:
    """Drain and close the open ``pools`` this process owns (not inherited ones)."""
    owned = [
        pool for pool in pools if pool.owner_pid == os.getpid() and not pool.closed
    ]
    if not owned:
        return
    _return_django_connections()
    started = time.monotonic()
    for pool in owned:
        remaining = started + pool.options.exit_timeout - time.monotonic()
        try:
            if isinstance(pool, AsyncSelectoPool):
                # Nothing can be awaited here: stopped in its loop if that
                # still runs, else its connections are closed from here.
                stop_at_exit(pool, timeout=max(remaining, 0.0))
            else:
                pool.stop(timeout=max(remaining, 0.0))
        except Exception:
            # Exiting anyway: say why this pool could not be stopped cleanly.
            logger.exception("stopping pool %r at exit failed", pool.name)


def _return_django_connections() -> None:
    """Give back the connections the exiting thread's ORM wrappers hold.

    A script or management command that used the ORM in the main thread still
    holds that connection at exit: nobody would return it, and waiting for it
    would only delay every exit by ``exit_timeout``.
    """
    from django.conf import settings

    if not settings.configured:
        return
    from django.db import connections

    try:
        connections.close_all()
    except Exception as exc:
        logger.debug("closing Django's connections at exit failed: %r", exc)
