"""What each pool option accepts: its parser, what is allowed, its maximum.

``options`` merges the places options come from and builds ``PoolOptions``;
every value it takes goes through ``parse_option()`` here, which names the
key, the value and what is allowed when the value is bad.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from typing import Any

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


#: The shortest period of the pool's recurring work (max_lifetime, max_idle,
#: health_check_interval), in seconds.
SHORTEST_PERIOD = 0.1


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
            return NEVER
        return parse_integer(value)

    return parse, "an integer >= 0, or None (never prepare)"


# Parsed value of prepare_threshold=None (None itself means "invalid" here).
NEVER = -1


def _boolean() -> tuple[Callable[[Any], bool | None], str]:
    def parse(value: Any) -> bool | None:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        return None

    return parse, "True or False"


def _seconds_or_off(
    minimum: float = 0.0,
) -> tuple[Callable[[Any], float | None], str]:
    """Seconds, or 0/None to turn the feature off (parsed as 0.0)."""
    parse_seconds, allowed = _seconds(minimum)

    def parse(value: Any) -> float | None:
        if isinstance(value, str) and value.strip().lower() in _OFF:
            return 0.0
        if value is None or (value == 0 and not isinstance(value, bool)):
            return 0.0
        return parse_seconds(value)

    return parse, f"{allowed}, or 0 or None (off)"


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
            return NO_RESET
        if isinstance(value, str):
            if value.strip().lower() in _FALSE | _OFF:
                return NO_RESET
            return value if value in RESET_NAMES else None
        if callable(value) and _takes_one_argument(value):
            return value
        return None

    named = ", ".join(repr(name) for name in RESET_NAMES)
    return parse, f"None (off), {named} or a callable taking the connection"


# Parsed value of reset=None (None itself means "invalid" here).
NO_RESET = ""


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
PARSERS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "pool_size": _integer(0),
    "max_overflow": _integer(0),
    # libpq's connect_timeout is whole seconds with a minimum of 2.
    "connection_timeout": _integer(2),
    "checkout_timeout": _seconds(),
    # A tenth of a second at least: shorter periods make the pool reconnect
    # or sweep in a busy loop (a login storm, a core at 100 %).
    "max_lifetime": _seconds(minimum=SHORTEST_PERIOD),
    "max_idle": _seconds(minimum=SHORTEST_PERIOD),
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
    "health_check_interval": _seconds_or_off(minimum=SHORTEST_PERIOD),
    "leak_detection_threshold": _seconds_or_off(),
    "exit_timeout": _seconds_or_off(),
    # The longest wait between two logins the server refused (_conn.outages).
    "login_retry_max": _seconds(minimum=1.0),
    # What a returned connection's session is cleared with (see _conn.reset).
    "reset": _reset(),
}
OPTION_NAMES = frozenset(PARSERS)
#: Every key the pool reads from OPTIONS: none of them reaches libpq.
POOL_KEYS = OPTION_NAMES | native.ARGUMENTS


_DAY = 86_400.0
#: The most connections a PostgreSQL server can take: ``max_connections``
#: stops at 2^18 - 1 (its MAX_BACKENDS).
MAX_CONNECTIONS = 262_143

#: The largest value of each numeric option, named in the error a larger one
#: gets. Generous, but far below what overflows a thread's wait
#: (``threading.TIMEOUT_MAX``, about 292 years) or a server's limits; why
#: each: docs/configuration.md#maxima-and-minima.
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


def parse_option(key: str, raw: Any, place: str) -> Any:
    """``raw`` parsed as pool option ``key`` (set at ``place``), or an error."""
    parse, allowed = PARSERS[key]
    value = parse(raw)
    if value is None or _above_maximum(key, value):
        raise ImproperlyConfigured(
            f"{place} = {shown(raw)} is invalid: expected {allowed}{_at_most(key)}."
        )
    return value


def _above_maximum(key: str, value: Any) -> bool:
    maximum = MAXIMA.get(key)
    return maximum is not None and isinstance(value, (int, float)) and value > maximum


def _at_most(key: str) -> str:
    maximum = MAXIMA.get(key)
    return "" if maximum is None else f", at most {_number(maximum)}"


def shown(raw: Any) -> str:
    """``repr(raw)``, cut short: the value may be anything, of any size."""
    text = repr(raw)
    return text if len(text) <= 80 else f"{text[:77]}..."
