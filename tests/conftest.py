"""Fixtures shared by the suite: an observer connection, threads, spare servers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.db import connections

from selecto_pool.backend.base import DatabaseWrapper
from testproject.pgserver import LocalPostgres


def conninfo_of(alias: str) -> dict[str, Any]:
    """psycopg arguments reaching the same database as ``alias``, unpooled."""
    settings_dict = connections[alias].settings_dict
    return {
        "dbname": settings_dict["NAME"],
        "user": settings_dict["USER"],
        "password": settings_dict["PASSWORD"],
        "host": settings_dict["HOST"],
        "port": settings_dict["PORT"],
    }


class Observer:
    """A connection outside every pool, to see what the server sees."""

    def __init__(self, conn: psycopg.Connection[Any]):
        self.conn = conn

    def connections_of(self, application_name: str) -> list[int]:
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            [application_name],
        ).fetchall()
        return [pid for (pid,) in rows]

    def terminate(self, pids: list[int]) -> None:
        for pid in pids:
            # The timeout makes the call wait until the backend has exited.
            self.conn.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])

    def scalar(self, sql: str, params: Any = None) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return row[0] if row else None


@pytest.fixture
def observer(transactional_db: None) -> Iterator[Observer]:
    with psycopg.connect(**conninfo_of("default"), autocommit=True) as conn:
        yield Observer(conn)


def run_threads(count: int, target: Callable[[int], Any]) -> list[Any]:
    """Run ``target(i)`` in ``count`` threads at once; re-raise the first error.

    Each thread closes its Django connections at the end, as a request does.
    """
    results: list[Any] = [None] * count
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def body(index: int) -> None:
        try:
            start.wait()
            results[index] = target(index)
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return results


@pytest.fixture(scope="module")
def spare_server() -> Iterator[LocalPostgres]:
    """A server of the module's own, free to be stopped and restarted."""
    with LocalPostgres() as server:
        yield server


def wrapper_for_settings(settings_dict: dict[str, Any], alias: str) -> DatabaseWrapper:
    """A selecto_pool ``DatabaseWrapper`` for settings outside ``DATABASES``."""
    completed = connections.configure_settings({"default": settings_dict})
    return DatabaseWrapper(completed["default"], alias=alias)
