"""``reset.clean()`` for an async connection: back to idle and autocommit.

What a connection must look like when it goes back into the pool is said in
``reset``; this is the same state reached with awaited I/O. A connection
that can't be brought there, or whose reset is interrupted (a cancelled
task), is closed: psycopg_pool discards it and opens a replacement.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

logger = logging.getLogger("selecto_pool.pool")


async def clean(
    conn: psycopg.AsyncConnection[Any], *, deallocate: bool, pool_name: str
) -> bool:
    """Roll back, restore autocommit, deallocate if asked; False if closed."""
    if conn.closed:
        return False
    try:
        if conn.pgconn.transaction_status != TransactionStatus.IDLE:
            await conn.rollback()
        if not conn.autocommit:
            await conn.set_autocommit(True)
        if deallocate:
            await conn.execute("DEALLOCATE ALL")
    except psycopg.Error as exc:
        logger.warning(
            "discarding a connection of %r that could not be reset: %s",
            pool_name,
            type(exc).__name__,
        )
        await conn.close()
        return False
    except BaseException:
        # Cancelled halfway: the connection's state is unknown.
        await conn.close()
        raise
    return True
