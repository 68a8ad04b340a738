"""The pooled backend with django-prometheus's ``django_db_*`` metrics.

django-prometheus counts queries in a subclass of the connection's cursor
class (``ExportingCursorWrapper``): its PostgreSQL backend wraps the
``cursor_factory`` of Django's connection parameters. The pool's connections
use a cursor class of their own (``SelectoCursor``, which prepares
statements), so a backend inheriting from both lost every query metric. Here
the wrapper goes around whichever class the connections use.
"""

from __future__ import annotations

from typing import Any, cast

import psycopg

try:
    from django_prometheus.db.common import (
        DatabaseWrapperMixin,
        ExportingCursorWrapper,
    )
except ImportError as exc:  # an optional dependency
    raise ImportError(
        "ENGINE 'selecto_pool.backend.prometheus' needs django-prometheus: "
        "pip install django-prometheus"
    ) from exc

from .. import base

CursorClass = type[psycopg.Cursor[Any]]


class DatabaseWrapper(DatabaseWrapperMixin, base.DatabaseWrapper):
    """selecto_pool's ``DatabaseWrapper``, counting queries as django-prometheus."""

    def pooled_cursor_class(self) -> CursorClass:
        return self._exporting(super().pooled_cursor_class())

    def _connection_params(self) -> dict[str, Any]:
        # Unpooled connections, and pooled ones that don't prepare, take
        # Django's cursor_factory from these (as django-prometheus's backend).
        params = super()._connection_params()
        params["cursor_factory"] = self._exporting(params["cursor_factory"])
        return params

    def create_cursor(self, name: str | None = None) -> Any:
        # Overridden to skip the mixin's, which passes psycopg2's factory=
        # argument (psycopg 3 has none): the connection's cursor_factory
        # counts instead, as in django-prometheus's PostgreSQL backend.
        return super(DatabaseWrapperMixin, self).create_cursor(name)

    def _exporting(self, cursor_class: CursorClass) -> CursorClass:
        """django-prometheus's counting subclass of ``cursor_class``.

        Made once per class and alias: unpooled connections ask on every
        connect, and each call of ``ExportingCursorWrapper`` makes a class.
        """
        made: dict[CursorClass, CursorClass] = self.__dict__.setdefault(
            "_exporting_classes", {}
        )
        if cursor_class not in made:
            made[cursor_class] = cast(
                CursorClass,
                ExportingCursorWrapper(cursor_class, self.alias, self.vendor),
            )
        return made[cursor_class]
