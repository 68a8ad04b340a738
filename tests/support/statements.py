"""The statement-cache tests' view of a pool: every connection, server memory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

import selecto_pool as sp


@contextmanager
def every_connection(pool: sp.SelectoPool) -> Iterator[list[psycopg.Connection[Any]]]:
    """Hold all of ``pool``'s idle connections; they go back in order (FIFO)."""
    pool.wait(timeout=10)
    held = [pool.getconn() for _ in range(pool.stats().idle)]
    try:
        yield held
    finally:
        for conn in held:
            pool.putconn(conn)


def server_memory(conn: psycopg.Connection[Any]) -> int:
    """Bytes of the backend's memory contexts, as that backend reports them."""
    row = conn.execute(
        "SELECT sum(total_bytes)::bigint FROM pg_backend_memory_contexts"
    ).fetchone()
    assert row is not None
    return int(row[0])
