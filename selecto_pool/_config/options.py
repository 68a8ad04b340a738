"""Pool options: parsed and validated once, into a frozen dataclass.

Options come from four places, later ones winning: the defaults below, the
project-wide ``SELECTO_POOL`` setting, flat keys in ``OPTIONS`` (which is where
a ``DATABASE_URL`` query string such as ``?pool_size=10`` lands), and the
``OPTIONS["pool"]`` dict. Every error names the key, the value and what is
allowed, because the person reading it is editing a settings file. What each
option accepts and its maximum are in ``values``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from django.core.exceptions import ImproperlyConfigured

from . import native
from .values import (
    MAX_CONNECTIONS,
    MAXIMA,
    NEVER,
    NO_RESET,
    OPTION_NAMES,
    PARSERS,
    POOL_KEYS,
    RESET_NAMES,
    parse_option,
    shown,
)

# The options' names and maxima are imported from here too.
__all__ = [
    "MAXIMA",
    "MAX_CONNECTIONS",
    "OPTION_NAMES",
    "POOL_KEYS",
    "RESET_NAMES",
    "PoolOptions",
    "build_options",
    "resolve_options",
]


@dataclass(frozen=True)
class PoolOptions:
    """The validated pool configuration of one database alias or direct pool."""

    enabled: bool = True
    pool_size: int = 10
    max_overflow: int = 20
    connection_timeout: int = 5
    checkout_timeout: float = 5.0
    max_lifetime: float = 3600.0
    max_idle: float = 600.0
    #: psycopg_pool's: more clients waiting get ``TooManyRequests``; 0 = no cap.
    max_waiting: int = 0
    #: psycopg_pool's background threads that open connections.
    num_workers: int = 3
    #: psycopg_pool's ``check``, run at every checkout; None: none (see
    #: ``explicit``: when not set, ``CONN_HEALTH_CHECKS`` decides).
    check: Callable[[Any], Any] | None = None
    #: psycopg_pool's: how long a failing connection slot is retried before
    #: it is given up (and ``reconnect_failed(pool)`` called). Never, unless
    #: set: psycopg_pool's 300 s default leaves a pool empty after a longer
    #: outage until a checkout asks for a connection, and /health/db asks
    #: for none.
    reconnect_timeout: float = math.inf
    reconnect_failed: Callable[[Any], Any] | None = None
    #: Prepared statements per connection (psycopg's prepared_max).
    prepared_statement_cache_size: int = 256
    #: Their estimated server memory per connection, in MiB.
    prepared_statement_cache_mib: int = 16
    #: Executions of a statement on a connection before it is prepared
    #: (psycopg's prepare_threshold); None never prepares.
    prepare_threshold: int | None = 5
    control: bool = True
    #: "transaction": behind PgBouncer in transaction mode without prepared
    #: statement support (< 1.22, or max_prepared_statements = 0): never
    #: prepare. "transaction-prepared": PgBouncer >= 1.22 handles them.
    pgbouncer: str = "off"
    #: Seconds between background sweeps of idle connections; 0 = off.
    health_check_interval: float = 30.0
    #: Log (with its checkout stack) a connection held longer; 0 = off.
    leak_detection_threshold: float = 0.0
    #: Seconds checked-out connections get to come back at interpreter exit.
    exit_timeout: float = 2.0
    #: The cap of the backoff between logins the server refused (PgBouncer's
    #: ``server_login_retry``).
    login_retry_max: float = 15.0
    #: Run on every returned connection: "session", "discard", a callable
    #: taking the connection (psycopg_pool's ``reset``), or None (off).
    reset: str | Callable[[Any], object] | None = None
    #: The keys somebody set explicitly (as opposed to defaults).
    explicit: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    #: Native-pool keys that do nothing here: (where it was set, why).
    ignored: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.prepare_threshold == NEVER:
            object.__setattr__(self, "prepare_threshold", None)
        if self.reset == NO_RESET:
            object.__setattr__(self, "reset", None)
        for name in ("check", "reconnect_failed"):
            if cast(object, getattr(self, name)) is False:  # "none" when parsed
                object.__setattr__(self, name, None)

    @property
    def prepares(self) -> bool:
        """Whether connections prepare statements at all."""
        return (
            self.prepared_statement_cache_size > 0
            and self.prepare_threshold is not None
            and self.pgbouncer != "transaction"
        )

    @property
    def max_size(self) -> int:
        """The hard cap on open connections: ``pool_size + max_overflow``."""
        return self.pool_size + self.max_overflow

    def as_dict(self) -> dict[str, Any]:
        # Shallow: check and reconnect_failed may be any callable object.
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("explicit", "ignored")
        }


def _parse_enabled(value: Any, where: str) -> bool | None:
    """``pool`` itself: True/False (or their URL spellings), None for a dict."""
    if isinstance(value, Mapping):
        return None
    enabled = PARSERS["control"][0](value)
    if isinstance(enabled, bool):
        return enabled
    raise ImproperlyConfigured(
        f"{where} = {value!r} is invalid: expected True, False or a dict of "
        f"pool options ({', '.join(sorted(OPTION_NAMES))})."
    )


def _apply(
    values: dict[str, Any],
    source: Mapping[str, Any],
    where: str,
    *,
    strict: bool = True,
    found: native.Found | None = None,
    native_names: bool = False,
) -> None:
    found = found if found is not None else native.Found()
    for key, raw in source.items():
        place = f"{where}[{shown(key)}]"
        if key in PARSERS:
            values[key] = parse_option(key, raw, place)
            found.places[key] = place
        elif native_names and found.note(key, raw, place):
            continue
        elif strict:
            raise ImproperlyConfigured(
                native.unknown_key(key, place, OPTION_NAMES, native_names)
            )


def _check_sizes(values: dict[str, Any], where: str) -> None:
    pool_size = values.get("pool_size", PoolOptions.pool_size)
    max_overflow = values.get("max_overflow", PoolOptions.max_overflow)
    if pool_size + max_overflow < 1:
        raise ImproperlyConfigured(
            f"{where}: pool_size {pool_size} + max_overflow {max_overflow} allows no "
            "connection at all; expected a total >= 1."
        )
    if pool_size + max_overflow > MAX_CONNECTIONS:
        raise ImproperlyConfigured(
            f"{where}: pool_size {pool_size} + max_overflow {max_overflow} is more "
            f"connections than a PostgreSQL server can take; expected a total <= "
            f"{MAX_CONNECTIONS} (the largest max_connections)."
        )


def build_options(api: str = "start_pool()", /, **overrides: Any) -> PoolOptions:
    """Options for a pool started directly (``start_pool(dsn, pool_size=3)``);
    ``api`` is the function the errors name."""
    if "control" in overrides:
        # Processes answer poolstats for the ORM's pools, named by alias.
        raise ImproperlyConfigured(
            f"{api} option 'control' is invalid: only the ORM's pools "
            "(DATABASES) answer manage.py poolstats/clearcache."
        )
    values: dict[str, Any] = {}
    _apply(values, overrides, f"{api} option")
    _check_sizes(values, api)
    return PoolOptions(**values, explicit=frozenset(values))


def resolve_options(
    alias: str, settings_dict: Mapping[str, Any], project_defaults: Any
) -> PoolOptions:
    """Merge and validate the pool options of one ``DATABASES`` entry."""
    values: dict[str, Any] = {}
    found = native.Found()
    if project_defaults is not None:
        if not isinstance(project_defaults, Mapping):
            raise ImproperlyConfigured(
                f"SELECTO_POOL = {project_defaults!r} is invalid: expected a dict "
                f"of pool options ({', '.join(sorted(OPTION_NAMES))})."
            )
        _apply(values, project_defaults, "SELECTO_POOL", found=found)

    where = f"DATABASES[{alias!r}]['OPTIONS']"
    db_options = settings_dict.get("OPTIONS") or {}
    _apply(values, db_options, where, strict=False, found=found, native_names=True)

    enabled, asks_native = True, False
    if "pool" in db_options:
        pool_setting = db_options["pool"]
        enabled_flag = _parse_enabled(pool_setting, f"{where}['pool']")
        if enabled_flag is None:
            _apply(
                values, pool_setting, f"{where}['pool']", found=found, native_names=True
            )
        else:
            enabled = enabled_flag
        asks_native = native.asks_for_native_defaults(pool_setting, enabled_flag)
    ours = {key: found.places[key] for key in native.OURS if key in found.places}
    values.update(native.resolve_sizing(found.native, ours, asks_native, parse_option))

    conn_max_age = settings_dict.get("CONN_MAX_AGE", 0)
    if enabled and conn_max_age != 0:
        raise ImproperlyConfigured(
            "Pooling doesn't support persistent connections. "
            f"DATABASES[{alias!r}]['CONN_MAX_AGE'] = {conn_max_age!r}: the pool "
            "keeps connections open itself. Set "
            f"CONN_MAX_AGE to 0, or {where}['pool'] to False to use persistent "
            "connections without the pool."
        )
    if "connect_timeout" in db_options and "connection_timeout" in values:
        raise ImproperlyConfigured(
            f"{where}['connect_timeout'] (libpq's, {db_options['connect_timeout']!r})"
            " and the pool option 'connection_timeout' "
            f"({values['connection_timeout']!r}) are both set: set only one."
        )
    _check_sizes(values, f"DATABASES[{alias!r}]")
    return PoolOptions(
        enabled=enabled,
        **values,
        explicit=frozenset(values),
        ignored=tuple(found.ignored),
    )
