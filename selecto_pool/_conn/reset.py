"""Returning a connection to the state the next borrower expects.

A connection goes back into the pool idle (no transaction) and in
autocommit, and without prepared statements when the pool's caches were
cleared meanwhile. A connection that cannot be brought there is closed:
psycopg_pool discards it and opens a replacement.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from .own_statements import run_own

logger = logging.getLogger("selecto_pool.pool")

IN_TRANSACTION = (TransactionStatus.INTRANS, TransactionStatus.INERROR)


def clean(conn: psycopg.Connection[Any], *, deallocate: bool, pool_name: str) -> bool:
    """Roll back, restore autocommit, deallocate if asked; False if closed."""
    if conn.closed:
        return False
    try:
        if conn.pgconn.transaction_status != TransactionStatus.IDLE:
            conn.rollback()
        if not conn.autocommit:
            conn.autocommit = True
        if deallocate:
            run_own(conn, "DEALLOCATE ALL")
    except psycopg.Error as exc:
        logger.warning(
            "discarding a connection of %r that could not be reset: %s",
            pool_name,
            type(exc).__name__,
        )
        conn.close()
        return False
    return True
