"""The pool's own statements (savepoints, ``DEALLOCATE ALL``), on a plain cursor.

Not through ``conn.execute()``, which makes a cursor of the connection's
``cursor_factory``: that class is the application's, and instrumentation
wraps it to count the application's statements (django-prometheus through
``selecto_pool.backend.prometheus``); the pool's bookkeeping must not show
up there. Never prepared, as the stock cursor runs them.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.abc import Query


def run_own(conn: psycopg.Connection[Any], statement: Query) -> None:
    with psycopg.Cursor(conn) as cursor:
        cursor.execute(statement, prepare=False)


async def arun_own(conn: psycopg.AsyncConnection[Any], statement: Query) -> None:
    """``run_own()`` on an async connection."""
    async with psycopg.AsyncCursor(conn) as cursor:
        await cursor.execute(statement, prepare=False)
