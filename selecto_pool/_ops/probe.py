"""The health probe's ``SELECT 1``, on a psycopg or a mysqlclient connection."""

from __future__ import annotations

import sys
from typing import Any

import psycopg
from django.db import DatabaseError


def select_one(conn: Any) -> None:
    """One round trip, through the DB-API both drivers share."""
    cursor = conn.cursor()
    try:
        cursor.execute("SELECT 1")
        cursor.fetchall()
    finally:
        cursor.close()


def errors() -> tuple[type[BaseException], ...]:
    """What a failed probe raises: Django's, psycopg's or mysqlclient's errors
    (the latter only where mysqlclient is imported, i.e. a MySQL pool exists)."""
    mysqldb = sys.modules.get("MySQLdb")
    mysql_errors: tuple[type[BaseException], ...] = (
        (mysqldb.Error,) if mysqldb is not None else ()
    )
    return (DatabaseError, psycopg.Error, *mysql_errors)
