"""The ORM's cursor: Django's, binding server-side where that is safe."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from django.db.backends.postgresql.base import CursorMixin

from .._compat import set_rowcount
from .._conn import decisions, execution
from .._conn.execution import Attempt


class SelectoCursor(CursorMixin, psycopg.Cursor[Any]):
    """Django's cursor, binding server-side (and so preparing) where it's safe."""

    #: The (query, params) of the last execute(), for last_executed_query().
    executed: tuple[Any, Any] | None = None

    def execute(
        self,
        query: Any,
        params: Any = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> SelectoCursor:
        self.executed = (query, params)
        if not execution.binds_server_side(query, params):
            return self._execute_stock(query, params)
        execute = super().execute
        attempt = Attempt(
            decisions.signature(query, params),
            lambda prepare: execute(query, params, prepare=prepare, binary=binary),
            lambda: self._execute_stock(query, params),
        )
        execution.run(self.connection, attempt, prepare)
        return self

    def executemany(
        self, query: Any, params_seq: Iterable[Any], *, returning: bool = False
    ) -> None:
        """The same decisions as ``execute()``, for the batch's parameter types.

        psycopg prepares every statement run with ``executemany()``, and sends
        the batch in one pipeline: one the server can't type fails before any
        row ran, and the whole batch runs the stock way.
        """
        rows = list(params_seq)
        if not rows or returning or not psycopg.Pipeline.is_supported():
            # returning: the stock way would keep only the last row's results.
            # No pipeline: psycopg commits row by row in autocommit, and a
            # failed row can't be retried without running the others twice.
            super().executemany(query, rows, returning=returning)
            return
        if not execution.batch_binds_server_side(query, rows):
            # Not a single DML statement, or a row has more parameters than
            # the protocol carries (libpq would refuse it before sending).
            self._executemany_stock(query, rows)
            return
        executemany = super().executemany
        attempt = Attempt(
            decisions.batch_signature(query, rows),
            lambda prepare: executemany(query, rows, returning=returning),
            lambda: self._executemany_stock(query, rows),
        )
        execution.run(self.connection, attempt, prepare=True)

    def _execute_stock(self, query: Any, params: Any) -> SelectoCursor:
        """Exactly what Django's default (client-side binding) cursor sends."""
        if params is not None:
            query = psycopg.ClientCursor(self.connection).mogrify(query, params)
        super().execute(query, None, prepare=False)
        return self

    def _executemany_stock(self, query: Any, rows: list[Any]) -> None:
        """What Django's default cursor does: client-side binding, one pipeline
        (all rows or none); the total row count is carried over."""
        with psycopg.ClientCursor(self.connection) as stock:
            stock.executemany(query, rows)
            set_rowcount(self, stock.rowcount)
