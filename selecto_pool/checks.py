"""System checks (``manage.py check``), with stable ids.

======================  ==========================================================
selecto_pool.E001       invalid pool options of a database alias, or an
                        ``OPTIONS`` key that nothing reads (a typo)
selecto_pool.E002       ``CONN_MAX_AGE`` set on a pooled alias
selecto_pool.E003       invalid ``SELECTO_POOL_HEALTH`` setting
selecto_pool.E004       ``SELECTO_POOL_HEALTH["database"]`` is not a pooled alias
selecto_pool.E005       invalid ``SELECTO_POOL_EXPECTED_PROCESSES``
selecto_pool.W001       pools may need more connections than the server allows
                        (``check --database ALIAS``: asks the server)
selecto_pool.W002       ``CONN_HEALTH_CHECKS`` costs a round trip per checkout
selecto_pool.W003       ``prepare_threshold`` set behind a transaction-mode PgBouncer
selecto_pool.W004       a Django native-pool key that has no effect with selecto_pool
======================  ==========================================================
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections

from ._config.flat_keys import check_flat_keys
from ._config.health import health_settings
from ._config.mysql import resolve_mysql_options
from ._config.options import MAX_CONNECTIONS, PoolOptions, resolve_options

ENGINE = "selecto_pool.backend"
MYSQL_ENGINE = "selecto_pool.backend.mysql"
#: The ENGINEs built on selecto_pool.backend, each with its pool options.
ENGINES = (ENGINE, "selecto_pool.backend.prometheus", MYSQL_ENGINE)


def _pooled_settings() -> dict[str, dict[str, Any]]:
    return {
        alias: settings_dict
        for alias, settings_dict in settings.DATABASES.items()
        if settings_dict.get("ENGINE") in ENGINES
    }


def _resolve(alias: str, settings_dict: dict[str, Any]) -> PoolOptions:
    resolve = (
        resolve_mysql_options
        if settings_dict.get("ENGINE") == MYSQL_ENGINE
        else resolve_options
    )
    return resolve(alias, settings_dict, getattr(settings, "SELECTO_POOL", None))


@register()
def check_configuration(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for alias, settings_dict in _pooled_settings().items():
        errors += _option_errors(alias, settings_dict)
    errors += _health_errors()
    return errors


def _option_errors(alias: str, settings_dict: dict[str, Any]) -> list[CheckMessage]:
    try:
        options = _resolve(alias, settings_dict)
        if settings_dict.get("ENGINE") != MYSQL_ENGINE:
            check_flat_keys(alias, settings_dict)  # libpq's keys
    except ImproperlyConfigured as exc:
        check_id = "E002" if "CONN_MAX_AGE" in str(exc) else "E001"
        return [Error(str(exc), id=f"selecto_pool.{check_id}")]
    warnings: list[CheckMessage] = [
        Warning(
            f"{place} has no effect with selecto_pool: {why}.",
            hint="Remove it; it is accepted so that settings written for "
            "Django's native pool still load.",
            id="selecto_pool.W004",
        )
        for place, why in options.ignored
    ]
    if options.pgbouncer == "transaction" and "prepare_threshold" in options.explicit:
        warnings.append(
            Warning(
                f"DATABASES[{alias!r}] sets prepare_threshold, but statements are "
                "never prepared behind a transaction-mode PgBouncer "
                "(pgbouncer='transaction'): they would vanish between "
                "transactions.",
                hint="PgBouncer >= 1.22 with max_prepared_statements > 0 keeps "
                "them: set pgbouncer='transaction-prepared' then.",
                id="selecto_pool.W003",
            )
        )
    health_checks = settings_dict.get("CONN_HEALTH_CHECKS")
    if options.enabled and health_checks and "check" not in options.explicit:
        warnings.append(
            Warning(
                f"DATABASES[{alias!r}]['CONN_HEALTH_CHECKS'] adds a round trip to "
                "every checkout; the pool already tests each connection it hands "
                "out without one.",
                hint="Remove CONN_HEALTH_CHECKS unless you want the round trip.",
                id="selecto_pool.W002",
            )
        )
    return warnings


def _health_errors() -> list[CheckMessage]:
    try:
        config = health_settings()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="selecto_pool.E003")]
    configured = getattr(settings, "SELECTO_POOL_HEALTH", None)
    if configured and not _is_pooled(config.database):
        return [
            Error(
                f"SELECTO_POOL_HEALTH['database'] = {config.database!r} is not a "
                f"database alias using {ENGINE!r} or {MYSQL_ENGINE!r} with "
                "pooling on.",
                id="selecto_pool.E004",
            )
        ]
    return []


def _is_pooled(alias: str) -> bool:
    settings_dict = _pooled_settings().get(alias)
    if settings_dict is None:
        return False
    try:
        return _resolve(alias, settings_dict).enabled
    except ImproperlyConfigured:
        return True  # reported as E001/E002 already


def _expected_processes() -> int | Error:
    value = getattr(settings, "SELECTO_POOL_EXPECTED_PROCESSES", 1)
    valid = isinstance(value, int) and not isinstance(value, bool)
    if not valid or not 1 <= value <= MAX_CONNECTIONS:
        shown = repr(value)
        return Error(
            f"SELECTO_POOL_EXPECTED_PROCESSES = "
            f"{shown if len(shown) <= 80 else shown[:77] + '...'} is invalid: "
            "expected an integer >= 1 (how many processes run the project at "
            f"once), at most {MAX_CONNECTIONS} (each needs a connection, and no "
            "server takes more).",
            id="selecto_pool.E005",
        )
    return value


@register(Tags.database)
def check_server_capacity(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """Compare what the pools may open with the server's ``max_connections``."""
    if not databases:
        return []
    processes = _expected_processes()
    if isinstance(processes, Error):
        return [processes]
    messages: list[CheckMessage] = []
    pooled = _pooled_settings()
    for alias in databases:
        if alias not in pooled:
            continue
        wrapper = connections[alias]
        try:
            options: PoolOptions = wrapper.pool_options  # type: ignore[attr-defined]
            limit = _server_limit(alias)
        except (ImproperlyConfigured, DatabaseError):
            continue  # reported by check_configuration, or the server is down
        # +1: the control connection answering `manage.py poolstats`.
        per_process = options.max_size + int(options.control)
        needed = per_process * processes
        if options.enabled and needed > limit:
            messages.append(
                Warning(
                    f"DATABASES[{alias!r}]: {processes} process(es) x {per_process} "
                    f"connections (pool_size {options.pool_size} + max_overflow "
                    f"{options.max_overflow} + control {int(options.control)}) = "
                    f"{needed}, above the {limit} the server allows.",
                    hint="Lower pool_size/max_overflow, or raise max_connections.",
                    id="selecto_pool.W001",
                )
            )
    return messages


def _server_limit(alias: str) -> int:
    """``max_connections`` less the reserved slots (PostgreSQL 16 added some);
    MySQL's ``max_connections`` (its extra one is for administrators)."""
    with connections[alias].cursor() as cursor:
        if connections[alias].vendor == "mysql":
            cursor.execute("SELECT @@max_connections")
            return int(cursor.fetchone()[0])
        cursor.execute(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - coalesce(current_setting('reserved_connections', true)::int, 0)"
        )
        return int(cursor.fetchone()[0])
