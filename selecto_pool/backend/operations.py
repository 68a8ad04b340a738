"""Database operations: how the SQL of a query is shown (debug, logs, tests)."""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import operations as postgresql
from psycopg import errors

from .cursor import SelectoCursor


class DatabaseOperations(postgresql.DatabaseOperations):
    # django-stubs say str; Django's own PostgreSQL backend returns None too.
    def last_executed_query(  # type: ignore[override]
        self, cursor: Any, sql: str, params: Any
    ) -> str | None:
        # Overridden: Django shows the SQL psycopg sent, which has $1
        # placeholders when bound server-side. Show what was executed (execute
        # wrappers included) with the values inlined, as the stock cursor's
        # SQL reads (connection.queries, logging, the debug toolbar...).
        raw = getattr(cursor, "cursor", cursor)  # Django's CursorWrapper or not
        executed = getattr(raw, "executed", None)
        if isinstance(raw, SelectoCursor) and executed and executed[1] is not None:
            try:
                return str(self.compose_sql(*executed))
            except errors.DataError:
                # Values that can't be inlined (a NUL byte), which failed to
                # run too: whatever the installed Django shows for them (None
                # up to 6.0, "QUERY = ... - PARAMS = ..." from 6.1).
                pass
        return super().last_executed_query(cursor, sql, params)
