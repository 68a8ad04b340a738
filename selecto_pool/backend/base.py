"""Django's PostgreSQL backend, taking its connections from a shared pool.

Django already knows how to use a psycopg_pool pool (``self.pool``): it opens
it, calls ``getconn()`` in ``get_new_connection()`` and ``putconn()`` in
``_close()``. This subclass only changes *which* pool that is: one per alias
for the whole process, configured by selecto_pool's options, and replaced when
the settings it was built from change (the test database) or after ``fork()``.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import psycopg_pool
from django.conf import settings
from django.db import connections
from django.db.backends.postgresql import base as postgresql
from django.db.utils import DatabaseErrorWrapper
from django.utils.functional import cached_property

from .. import _compat
from .._compat import pool_of
from .._config.flat_keys import check_flat_keys
from .._config.options import (
    POOL_KEYS,
    PoolOptions,
    resolve_options,
)
from .._pool.pool import SelectoPool
from .._process import registry
from .._process.control import Responder
from ..errors import PoolError
from .creation import DatabaseCreation
from .cursor import SelectoCursor
from .features import DatabaseFeatures
from .operations import DatabaseOperations
from .pooled import AliasPoolMixin

logger = logging.getLogger("selecto_pool.pool")


class _PoolErrorsPassThrough(DatabaseErrorWrapper):
    """Django's error wrapper, leaving the pool's own errors as they are.

    They are Django ``OperationalError`` subclasses already; re-wrapping would
    turn a ``CheckoutTimeout`` into a plain ``OperationalError``.
    """

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if exc_type is None or issubclass(exc_type, PoolError):
            return
        super().__exit__(exc_type, exc_value, traceback)


class DatabaseWrapper(AliasPoolMixin[SelectoPool], postgresql.DatabaseWrapper):
    """A PostgreSQL ``DatabaseWrapper`` whose connections come from the pool."""

    creation_class = DatabaseCreation
    features_class = DatabaseFeatures
    ops_class = DatabaseOperations

    @cached_property
    def wrap_database_errors(self) -> DatabaseErrorWrapper:
        return _PoolErrorsPassThrough(self)

    @cached_property
    def pool_options(self) -> PoolOptions:
        """The validated options of this alias (read once, settings are lazy)."""
        options = resolve_options(
            self.alias, self.settings_dict, getattr(settings, "SELECTO_POOL", None)
        )
        check_flat_keys(self.alias, self.settings_dict)
        return options

    def close_pool(self) -> None:
        # Overridden to forget the connection parameters kept at hand too.
        super().close_pool()
        self.__dict__.pop("_params_at_hand", None)

    def _set_autocommit(self, autocommit: bool) -> None:
        # Django sets autocommit on every checkout; pooled connections come
        # back in autocommit mode already (see SelectoPool._clean), and
        # psycopg's setter costs a generator round even when nothing changes.
        if self.connection.autocommit != autocommit:
            super()._set_autocommit(autocommit)  # type: ignore[misc]

    def create_cursor(self, name: str | None = None) -> Any:
        cursor = super().create_cursor(name)
        # Overridden: a named cursor (.iterator()) still open when the
        # connection goes back to the pool is closed there, as it would be
        # with the connection unpooled (see SelectoPool.track_cursor).
        if name is not None and (pool := self.pool) is not None:
            pool.track_cursor(self.connection, cursor)
        return cursor

    def _configure_role(self, connection: psycopg.Connection[Any]) -> bool:
        # Overridden: Django composes SET ROLE with compose_sql(), i.e. with
        # a cursor of this wrapper's connection, which for a pooled
        # connection being configured means checking out another one (a
        # deadlock with one connection; another thread's wrapper otherwise).
        # The same statement, composed on the connection being configured.
        if new_role := self.settings_dict["OPTIONS"].get("assume_role"):
            sql = psycopg.ClientCursor(connection).mogrify("SET ROLE %s", [new_role])
            with connection.cursor() as cursor:
                cursor.execute(sql)
            return True
        return False

    def get_connection_params(self) -> dict[str, Any]:
        # Overridden to keep selecto_pool's keys away from libpq. Django also
        # builds these on every connect(), even when the pool connects; they
        # only change with the settings, which replace the pool (see pool).
        at_hand = self.__dict__.get("_params_at_hand")
        name = self.settings_dict["NAME"]
        if (
            at_hand is not None
            and at_hand[0] == registry.version
            and at_hand[1] == name
        ):
            return dict(at_hand[2])
        params = self._connection_params()
        if self.pool_options.enabled:
            self.__dict__["_params_at_hand"] = (registry.version, name, params)
        return dict(params)

    def _connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        for name in POOL_KEYS:
            params.pop(name, None)
        # psycopg's prepare_threshold, as Django passes it (None: never).
        # Pooled connections get the cache's in the pool's configure step;
        # unpooled ones keep Django's meaning of the option.
        options = self.pool_options
        explicit = "prepare_threshold" in options.explicit and not options.enabled
        params["prepare_threshold"] = options.prepare_threshold if explicit else None
        params.setdefault("connect_timeout", self.pool_options.connection_timeout)
        return params

    def pooled_cursor_class(self) -> type[psycopg.Cursor[Any]]:
        """The cursor class of pooled connections that prepare statements.

        A subclass may wrap it: ``selecto_pool.backend.prometheus`` counts
        queries with django-prometheus's cursor class around it.
        """
        return SelectoCursor

    def _checkout_check(self) -> Any:
        """psycopg_pool's check at checkout, on top of the free liveness test.

        As Django 6.1's native pool: OPTIONS' ``check`` if set (None: none),
        else ``check_connection`` (a round trip) with CONN_HEALTH_CHECKS.
        """
        if "check" in self.pool_options.explicit:
            return self.pool_options.check
        if self.settings_dict["CONN_HEALTH_CHECKS"]:
            return psycopg_pool.ConnectionPool.check_connection
        return None

    def _new_pool(self) -> SelectoPool:
        _compat.check(django=True)
        registry.on_fork_in_child(_forget_inherited_connections)
        kwargs = self.get_connection_params()
        # Pooled connections rest in autocommit; Django sets its mode on checkout.
        kwargs["autocommit"] = True
        if self.pool_options.prepares:
            kwargs["cursor_factory"] = self.pooled_cursor_class()
        options = self.pool_options
        for place, why in options.ignored:
            logger.warning(
                "pool %r: %s has no effect with selecto_pool: %s",
                self.alias,
                place,
                why,
            )
        pool = SelectoPool(
            name=self.alias,
            check=self._checkout_check(),
            options=options,
            kwargs=kwargs,
            configure=_compat.configure_hook(self),
            target=self._pool_target(),
        )
        if self.pool_options.control:
            responder = Responder(pool, self.alias, kwargs)
            pool.add_close_callback(responder.stop)
            responder.start()
        return pool


def _forget_inherited_connections() -> None:
    """In a forked child, drop (without closing) the parent's pooled connections.

    Only the forking thread survives ``fork()``, so its wrappers are the only
    ones that can still be used.
    """
    for wrapper in connections.all(initialized_only=True):
        if pool_of(wrapper.connection) is not None:
            wrapper.connection = None
