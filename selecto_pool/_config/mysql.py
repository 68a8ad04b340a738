"""Pool options of a MySQL or MariaDB database: PostgreSQL's, less six.

The options are parsed by ``options`` exactly as for PostgreSQL; six of them
mean nothing on MySQL, and setting one to anything but "off" is an error
naming it, its value and why (never a silently ignored option):

* ``prepared_statement_cache_size``, ``prepared_statement_cache_mib`` and
  ``prepare_threshold``: mysqlclient, Django's MySQL driver, binds parameters
  on the client; there are no server-side prepared statements to cache
  (docs/prepared-statements.md);
* ``reset``: its resets are PostgreSQL statements;
* ``pgbouncer``: PgBouncer is PostgreSQL's;
* ``control``: the commands reach other processes over LISTEN/NOTIFY, which
  MySQL doesn't have (docs/operations.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .options import PoolOptions, build_options, resolve_options

# name -> (whether a parsed value means "off", the values allowed, why)
_POSTGRESQL_ONLY: dict[str, tuple[Any, str, str]] = {
    "prepared_statement_cache_size": (
        lambda value: value == 0,
        "0, or leave it out",
        "mysqlclient binds parameters on the client: MySQL connections prepare nothing",
    ),
    "prepare_threshold": (
        lambda value: value is None,
        "None, or leave it out",
        "mysqlclient binds parameters on the client: MySQL connections prepare nothing",
    ),
    "prepared_statement_cache_mib": (
        lambda value: False,
        "to leave it out",
        "mysqlclient binds parameters on the client: MySQL connections prepare nothing",
    ),
    "reset": (
        lambda value: value is None,
        "None, or leave it out",
        "its resets are PostgreSQL statements (RESET ALL, DISCARD ...); MySQL "
        "connections are rolled back and put back in autocommit on return",
    ),
    "pgbouncer": (
        lambda value: value == "off",
        "False, or leave it out",
        "PgBouncer is for PostgreSQL",
    ),
    "control": (
        lambda value: value is False,
        "False, or leave it out",
        "poolstats and clearcache reach other processes over LISTEN/NOTIFY, "
        "which MySQL doesn't have",
    ),
}


def _for_mysql(options: PoolOptions) -> PoolOptions:
    """The options a MySQL pool runs with: nothing prepared, no control."""
    return dataclasses.replace(
        options,
        prepared_statement_cache_size=0,
        prepare_threshold=None,
        pgbouncer="off",
        control=False,
    )


def _reject_postgresql_only(options: PoolOptions, where: Any) -> None:
    for key, (is_off, allowed, why) in _POSTGRESQL_ONLY.items():
        value = getattr(options, key)
        if key in options.explicit and not is_off(value):
            raise ImproperlyConfigured(
                f"{where(key)} = {value!r} is invalid for a MySQL database "
                f"({why}): expected {allowed}."
            )


def resolve_mysql_options(
    alias: str, settings_dict: Mapping[str, Any], project_defaults: Any
) -> PoolOptions:
    """Merge and validate the pool options of one MySQL ``DATABASES`` entry."""
    db_options = settings_dict.get("OPTIONS") or {}
    pool = db_options.get("pool")
    pool_keys = pool if isinstance(pool, Mapping) else {}
    defaults = project_defaults if isinstance(project_defaults, Mapping) else {}
    if "connect_timeout" in db_options and (
        "connection_timeout" in db_options
        or "connection_timeout" in pool_keys
        or "connection_timeout" in defaults
    ):
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}]['OPTIONS']['connect_timeout'] (mysqlclient's, "
            f"{db_options['connect_timeout']!r}) and the pool option "
            "'connection_timeout' are both set: set only one."
        )
    options = resolve_options(alias, settings_dict, project_defaults)

    def where(key: str) -> str:
        base = f"DATABASES[{alias!r}]['OPTIONS']"
        if key in pool_keys:
            return f"{base}['pool'][{key!r}]"
        if key in db_options:
            return f"{base}[{key!r}]"
        return f"SELECTO_POOL[{key!r}]"

    _reject_postgresql_only(options, where)
    return _for_mysql(options)


def build_mysql_options(**overrides: Any) -> PoolOptions:
    """Options of ``start_pool(config, adapter="mysql", ...)``."""
    options = build_options(**overrides)
    _reject_postgresql_only(
        options, lambda key: f"start_pool(adapter='mysql') option {key!r}"
    )
    return _for_mysql(options)
