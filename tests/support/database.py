"""Reaching the test database around the pool, and ORM wrappers of our own."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import environ
import psycopg
from django.db import connections

from selecto_pool.backend.base import DatabaseWrapper


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


def url_of(alias: str) -> str:
    """A ``DATABASE_URL`` reaching the same database as ``alias``."""
    info = conninfo_of(alias)
    return (
        f"postgres://{info['user']}:{quote(info['password'], safe='')}"
        f"@{info['host']}:{info['port']}/{info['dbname']}"
    )


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


def wrapper_for_settings(settings_dict: dict[str, Any], alias: str) -> DatabaseWrapper:
    """A selecto_pool ``DatabaseWrapper`` for settings outside ``DATABASES``."""
    completed = connections.configure_settings({"default": settings_dict})
    return DatabaseWrapper(completed["default"], alias=alias)


def wrapper_with_pool(pool: dict[str, Any], alias: str) -> DatabaseWrapper:
    """A selecto_pool alias outside ``DATABASES``, on the test database."""
    settings_dict = {
        **connections["default"].settings_dict,
        "OPTIONS": {"application_name": f"selecto-{alias}", "pool": pool},
    }
    return wrapper_for_settings(settings_dict, alias)


def orm_settings(url: str, application_name: str, **pool: Any) -> dict[str, Any]:
    """Settings of a selecto_pool alias on ``url``, with these pool options."""
    return {
        **environ.Env.db_url_config(url),
        "ENGINE": "selecto_pool.backend",
        "OPTIONS": {"application_name": application_name, "pool": pool},
    }


def thread_wrappers(
    settings_dict: dict[str, Any], alias: str, count: int
) -> list[DatabaseWrapper]:
    """One ORM wrapper per client thread (all share the alias's pool)."""
    wrappers = [wrapper_for_settings(settings_dict, alias) for _ in range(count)]
    for wrapper in wrappers:
        wrapper.inc_thread_sharing()  # built here, used in the client's thread
    return wrappers
