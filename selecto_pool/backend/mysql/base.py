"""Django's MySQL backend, taking its connections from a shared pool.

Django's MySQL backend has no pool: it connects in ``get_new_connection()``
and closes in ``_close()``. This subclass checks a connection out of the
alias's pool there and gives it back here; everything else is Django's. The
pool is one per alias for the whole process, configured by selecto_pool's
options, and replaced when the settings it was built from change (the test
database) or after ``fork()``, as with the PostgreSQL ENGINE.

The session setup Django's backend runs on every connect (isolation level,
``SQL_AUTO_IS_NULL``) runs once per pooled connection, when it is opened: the
session keeps it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.mysql import base as mysql
from django.utils.functional import cached_property

from ..._config.mysql import resolve_mysql_options
from ..._config.options import OPTION_NAMES, PoolOptions
from ..._pool.mysql import MySQLPool
from ..._process import registry
from ..pooled import AliasPoolMixin
from .creation import DatabaseCreation


class DatabaseWrapper(AliasPoolMixin[MySQLPool], mysql.DatabaseWrapper):
    """A MySQL ``DatabaseWrapper`` whose connections come from the pool."""

    creation_class = DatabaseCreation
    #: The pool the current connection was checked out from (None: unpooled).
    _checked_out_from: MySQLPool | None = None
    _connecting = False

    @cached_property
    def pool_options(self) -> PoolOptions:
        """The validated options of this alias (read once, settings are lazy)."""
        return resolve_mysql_options(
            self.alias, self.settings_dict, getattr(settings, "SELECTO_POOL", None)
        )

    def get_connection_params(self) -> dict[str, Any]:
        # Overridden to keep selecto_pool's keys away from mysqlclient.
        params: dict[str, Any] = super().get_connection_params()
        params.pop("pool", None)
        for name in OPTION_NAMES:
            params.pop(name, None)
        params.setdefault("connect_timeout", self.pool_options.connection_timeout)
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        pool = self.pool
        if pool is None:
            return super().get_new_connection(conn_params)
        pool.open()
        conn = pool.getconn()
        self._checked_out_from = pool
        return conn

    def connect(self) -> None:
        # Overridden to tell init_connection_state() it runs for a checkout.
        self._connecting = True
        try:
            super().connect()
        finally:
            self._connecting = False

    def init_connection_state(self) -> None:
        if self._connecting and self._checked_out_from is not None:
            # A checkout: the session was set up when the pool opened the
            # connection (_session_setup); only Django's one-off version
            # check is left. Called otherwise, it does what Django's does.
            BaseDatabaseWrapper.init_connection_state(self)
        else:
            super().init_connection_state()

    def is_usable(self) -> bool:
        # Overridden: a connection given back to the pool is no longer this
        # wrapper's (Django's PostgreSQL backend says the same of its pool's).
        return self.connection is not None and bool(super().is_usable())

    def _close(self) -> None:
        # Overridden: a pooled connection goes back to its pool (the one it
        # came from, even if the alias has a new one since), not closed.
        pool, self._checked_out_from = self._checked_out_from, None
        if pool is None or self.connection is None:
            super()._close()  # type: ignore[misc]
            return
        connection, self.connection = self.connection, None
        with self.wrap_database_errors:
            pool.putconn(connection)

    def _new_pool(self) -> MySQLPool:
        registry.on_fork_in_child(_forget_inherited_connections)
        kwargs = self.get_connection_params()  # sets self.isolation_level
        return MySQLPool(
            name=self.alias,
            options=self.pool_options,
            kwargs=kwargs,
            configure=_session_setup(self.isolation_level),
            health_checks=bool(self.settings_dict["CONN_HEALTH_CHECKS"]),
            target=self._pool_target(),
        )


def _session_setup(isolation_level: str | None) -> Any:
    """What Django's backend does on every connect, for a new pooled connection."""
    statements = ["SET SQL_AUTO_IS_NULL = 0"]
    if isolation_level:
        statements.append(
            f"SET SESSION TRANSACTION ISOLATION LEVEL {isolation_level.upper()}"
        )

    def configure(conn: Any) -> None:
        # As Django's get_new_connection(): mysqlclient's bytes encoder.
        if conn.encoders.get(bytes) is bytes:
            conn.encoders.pop(bytes)
        cursor = conn.cursor()
        try:
            cursor.execute("; ".join(statements))
        finally:
            cursor.close()  # reads the reply of every statement

    return configure


def _forget_inherited_connections() -> None:
    """In a forked child, drop (without closing) the parent's pooled connections.

    Their sockets were detached already (see _pool.mysql); only the forking
    thread survives ``fork()``, so its wrappers are the only ones left.
    """
    for wrapper in connections.all(initialized_only=True):
        if isinstance(wrapper, DatabaseWrapper) and wrapper._checked_out_from:
            wrapper._checked_out_from = None
            wrapper.connection = None
