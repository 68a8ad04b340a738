"""Helpers for the statement-cache tests: every connection of a pool, server memory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from django.db import connections

import selecto_pool as sp
from selecto_pool.backend.base import DatabaseWrapper


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


def wrapper_with_pool(pool: dict[str, Any], alias: str) -> DatabaseWrapper:
    """A selecto_pool alias outside ``DATABASES``, on the test database."""
    settings_dict = {
        **connections["default"].settings_dict,
        "OPTIONS": {"application_name": f"selecto-{alias}", "pool": pool},
    }
    completed = connections.configure_settings({"default": settings_dict})
    return DatabaseWrapper(completed["default"], alias=alias)
