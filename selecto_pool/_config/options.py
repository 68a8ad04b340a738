"""Pool options: parsed and validated once, into a frozen dataclass.

Options come from four places, later ones winning: the defaults below, the
project-wide ``SELECTO_POOL`` setting, flat keys in ``OPTIONS`` (which is where
a ``DATABASE_URL`` query string such as ``?pool_size=10`` lands), and the
``OPTIONS["pool"]`` dict. Every error names the key, the value and what is
allowed, because the person reading it is editing a settings file.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from django.core.exceptions import ImproperlyConfigured

from . import native

_TRUE = {"true", "on", "yes", "1"}
_FALSE = {"false", "off", "no", "0"}


def _number(value: float) -> str:
    """``86400``, not ``86400.0``: how a settings file would spell it."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _integer(minimum: int) -> tuple[Callable[[Any], int | None], str]:
    def parse(value: Any) -> int | None:
        if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,30}\s*", value):
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        return None

    return parse, f"an integer >= {minimum}"


def _seconds(minimum: float = 0.0) -> tuple[Callable[[Any], float | None], str]:
    def parse(value: Any) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return None
        try:
            seconds = float(value)
        except (ValueError, OverflowError):  # "soon", or an int beyond floats
            return None
        if math.isfinite(seconds) and seconds > 0 and seconds >= minimum:
            return seconds
        return None

    if minimum:
        return parse, f"a number of seconds >= {_number(minimum)}"
    return parse, "a number of seconds > 0"


def _threshold() -> tuple[Callable[[Any], Any], str]:
    parse_integer, _ = _integer(0)

    def parse(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return _NEVER
        return parse_integer(value)

    return parse, "an integer >= 0, or None (never prepare)"


# Parsed value of prepare_threshold=None (None itself means "invalid" here).
_NEVER = -1


def _boolean() -> tuple[Callable[[Any], bool | None], str]:
    def parse(value: Any) -> bool | None:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        return None

    return parse, "True or False"


def _seconds_or_off() -> tuple[Callable[[Any], float | None], str]:
    """Seconds, or 0/None to turn the feature off (parsed as 0.0)."""
    parse_seconds, _ = _seconds()

    def parse(value: Any) -> float | None:
        if isinstance(value, str) and value.strip().lower() in _OFF:
            return 0.0
        if value is None or (value == 0 and not isinstance(value, bool)):
            return 0.0
        return parse_seconds(value)

    return parse, "a number of seconds > 0, or 0 or None (off)"


_OFF = {"0", "0.0", "none", "off"}


PGBOUNCER_MODES = ("transaction", "transaction-prepared")


def _pgbouncer() -> tuple[Callable[[Any], Any], str]:
    def parse(value: Any) -> Any:
        if value is False or (isinstance(value, str) and value.lower() in _FALSE):
            return "off"
        return value if value in PGBOUNCER_MODES else None

    return parse, f"False, {' or '.join(repr(mode) for mode in PGBOUNCER_MODES)}"


#: The ready-made resets (see _conn.reset): what each clears is documented in
#: docs/configuration.md.
RESET_NAMES = ("session", "discard")


def _reset() -> tuple[Callable[[Any], Any], str]:
    """A named reset, a callable taking the connection, or off (parsed as "")."""

    def parse(value: Any) -> Any:
        if value is None or value is False:
            return _NO_RESET
        if isinstance(value, str):
            if value.strip().lower() in _FALSE | _OFF:
                return _NO_RESET
            return value if value in RESET_NAMES else None
        if callable(value) and _takes_one_argument(value):
            return value
        return None

    named = ", ".join(repr(name) for name in RESET_NAMES)
    return parse, f"None (off), {named} or a callable taking the connection"


# Parsed value of reset=None (None itself means "invalid" here).
_NO_RESET = ""


def _takes_one_argument(function: Callable[..., Any]) -> bool:
    # psycopg_pool's shape: reset(conn). A callable that can't take it would
    # fail at every return and close every connection.
    try:
        inspect.signature(function).bind(None)
    except TypeError:
        return False
    except ValueError:
        return True  # no signature to inspect (some builtins): trust it
    return True


# name -> (parser returning None for a bad value, description of what's allowed)
_PARSERS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "pool_size": _integer(0),
    "max_overflow": _integer(0),
    # libpq's connect_timeout is whole seconds with a minimum of 2.
    "connection_timeout": _integer(2),
    "checkout_timeout": _seconds(),
    "max_lifetime": _seconds(),
    "max_idle": _seconds(),
    # psycopg_pool's own, under their names (see native).
    "max_waiting": _integer(0),
    "num_workers": _integer(1),
    "check": native.parse_check(),
    "reconnect_timeout": _seconds(),
    "reconnect_failed": native.parse_callback(),
    "prepared_statement_cache_size": _integer(0),
    # Estimated server memory of each connection's prepared statements.
    "prepared_statement_cache_mib": _integer(1),
    "prepare_threshold": _threshold(),
    # Answer `manage.py poolstats`/`clearcache` over LISTEN/NOTIFY (_control).
    "control": _boolean(),
    # A PgBouncer in transaction mode between the pool and PostgreSQL.
    "pgbouncer": _pgbouncer(),
    # Reliability (see _maintenance, _leaks and _shutdown).
    "health_check_interval": _seconds_or_off(),
    "leak_detection_threshold": _seconds_or_off(),
    "exit_timeout": _seconds_or_off(),
    # The longest wait between two logins the server refused (_conn.outages).
    "login_retry_max": _seconds(minimum=1.0),
    # What a returned connection's session is cleared with (see _conn.reset).
    "reset": _reset(),
}
OPTION_NAMES = frozenset(_PARSERS)
#: Every key the pool reads from OPTIONS: none of them reaches libpq.
POOL_KEYS = OPTION_NAMES | native.ARGUMENTS


_DAY = 86_400.0
#: The most connections a PostgreSQL server can take: ``max_connections``
#: stops at 2^18 - 1 (its MAX_BACKENDS).
MAX_CONNECTIONS = 262_143

#: The largest value of each numeric option, named in the error a larger one
#: gets. Generous, but far below what overflows a thread's wait
#: (``threading.TIMEOUT_MAX``, about 292 years) or a server's limits; why
#: each: docs/configuration.md#maxima.
MAXIMA: dict[str, int | float] = {
    "pool_size": MAX_CONNECTIONS,
    "max_overflow": MAX_CONNECTIONS,
    "connection_timeout": 3_600,
    "checkout_timeout": _DAY,
    "max_lifetime": 30 * _DAY,
    "max_idle": 30 * _DAY,
    # Clients queued for a connection, per pool (0: no limit).
    "max_waiting": 1_000_000,
    # psycopg_pool's threads that open connections.
    "num_workers": 100,
    "reconnect_timeout": _DAY,
    "prepared_statement_cache_size": 10_000,
    # Estimated server memory of one connection's prepared statements.
    "prepared_statement_cache_mib": 1_024,
    "prepare_threshold": 1_000_000,
    "health_check_interval": _DAY,
    "leak_detection_threshold": _DAY,
    "exit_timeout": 3_600.0,
    "login_retry_max": _DAY,
}


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
    #: it is given up (and ``reconnect_failed(pool)`` called).
    reconnect_timeout: float = 300.0
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
        if self.prepare_threshold == _NEVER:
            object.__setattr__(self, "prepare_threshold", None)
        if self.reset == _NO_RESET:
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
    enabled = _PARSERS["control"][0](value)
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
        place = f"{where}[{_shown(key)}]"
        if key in _PARSERS:
            values[key] = _parse(key, raw, place)
            found.places[key] = place
        elif native_names and found.note(key, raw, place):
            continue
        elif strict:
            raise ImproperlyConfigured(
                native.unknown_key(key, place, OPTION_NAMES, native_names)
            )


def _parse(key: str, raw: Any, place: str) -> Any:
    """``raw`` parsed as pool option ``key`` (set at ``place``), or an error."""
    parse, allowed = _PARSERS[key]
    value = parse(raw)
    if value is None or _above_maximum(key, value):
        raise ImproperlyConfigured(
            f"{place} = {_shown(raw)} is invalid: expected {allowed}{_at_most(key)}."
        )
    return value


def _above_maximum(key: str, value: Any) -> bool:
    maximum = MAXIMA.get(key)
    return maximum is not None and isinstance(value, (int, float)) and value > maximum


def _at_most(key: str) -> str:
    maximum = MAXIMA.get(key)
    return "" if maximum is None else f", at most {_number(maximum)}"


def _shown(raw: Any) -> str:
    """``repr(raw)``, cut short: the value may be anything, of any size."""
    shown = repr(raw)
    return shown if len(shown) <= 80 else f"{shown[:77]}..."


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


def build_options(**overrides: Any) -> PoolOptions:
    """Options for a pool started directly (``start_pool(dsn, pool_size=3)``)."""
    if "control" in overrides:
        # Processes answer poolstats for the ORM's pools, named by alias.
        raise ImproperlyConfigured(
            "start_pool() option 'control' is invalid: only the ORM's pools "
            "(DATABASES) answer manage.py poolstats/clearcache."
        )
    values: dict[str, Any] = {}
    _apply(values, overrides, "start_pool() option")
    _check_sizes(values, "start_pool()")
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
    values.update(native.resolve_sizing(found.native, ours, asks_native, _parse))

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
