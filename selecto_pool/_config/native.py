"""Django's native pool settings (psycopg_pool's arguments), read here.

Settings written for ``django.db.backends.postgresql`` with
``OPTIONS["pool"]`` must keep their meaning when only ``ENGINE`` changes:
``pool: True`` is psycopg_pool's defaults (4 connections, fixed, a 30 s
wait), ``{"min_size": 4}`` is 4 fixed, ``{"max_size": 8}`` is 4 to 8. This
module says what each ``ConnectionPool`` argument becomes, and decides which
defaults an alias's sizes take. The table is docs/configuration.md's
"Django's native-pool names".
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg_pool
from django.core.exceptions import ImproperlyConfigured

#: Native sizing name -> the option it sets. ``max_size`` is the total:
#: ``max_overflow = max_size - min_size``.
SIZING = {
    "min_size": "pool_size",
    "max_size": "max_overflow",
    "timeout": "checkout_timeout",
}
#: selecto-pool's spelling of the same three.
OURS = ("pool_size", "max_overflow", "checkout_timeout")

#: psycopg_pool's defaults, which Django's native pool keeps: min_size 4,
#: max_size = min_size, timeout 30 s.
DEFAULT_MIN_SIZE = 4
DEFAULT_TIMEOUT = 30.0

#: Arguments that do nothing with this backend: accepted (a settings file
#: written for the native pool still loads), reported by system check
#: selecto_pool.W004 and logged when the pool is built.
IGNORED = {
    "name": "the pool is named after its database alias (logs, poolstats, metrics)",
    "close_returns": "Django gives every connection back to the pool itself",
}

#: Arguments that can't work here, and why (an error names the reason).
REFUSED = {
    "conninfo": "the connection comes from NAME, USER, HOST, PORT and the "
    "other OPTIONS keys",
    "kwargs": "the connection comes from NAME, USER, HOST, PORT and the other "
    "OPTIONS keys",
    "connection_class": "the pool uses a connection class of its own, which "
    "records and paces connection attempts",
    "configure": "Django configures each new connection itself; use the "
    "connection_created signal",
    "open": "the pool opens at the alias's first query",
}

#: Every ``psycopg_pool.ConnectionPool`` argument. Those not above are pool
#: options of the same name and meaning.
SAME = frozenset(
    {"max_lifetime", "max_idle", "max_waiting", "num_workers", "check"}
    | {"reconnect_timeout", "reconnect_failed", "reset"}
)
ARGUMENTS = frozenset({*SIZING, *IGNORED, *REFUSED, *SAME})

#: The native names accepted in OPTIONS (``REFUSED`` ones are errors).
ACCEPTED = ARGUMENTS - REFUSED.keys()


def ours_for(key: Any) -> str:
    """Where native names aren't read (``SELECTO_POOL``, ``start_pool()``):
    the hint naming selecto_pool's spelling, or nothing."""
    if key not in SIZING:
        return ""
    ours = "max_overflow (max_size - pool_size)" if key == "max_size" else SIZING[key]
    return f" (Django's native-pool name, read in OPTIONS only; here: {ours})"


@dataclass
class Found:
    """Where each option of an alias was set, and its native-pool keys."""

    places: dict[str, str] = field(default_factory=dict)
    #: Native sizing key -> (raw value, where it was set).
    native: dict[str, tuple[Any, str]] = field(default_factory=dict)
    #: Keys that do nothing here (``IGNORED``): (where it was set, why).
    ignored: list[tuple[str, str]] = field(default_factory=list)

    def note(self, key: Any, raw: Any, place: str) -> bool:
        """Take ``key`` if it is a native name (False if it isn't one)."""
        if key in SIZING:
            self.native[key] = (raw, place)
        elif key in IGNORED:
            self.ignored.append((place, IGNORED[key]))
        elif key in REFUSED:
            raise ImproperlyConfigured(
                f"{place} (an argument of psycopg_pool's ConnectionPool) can't "
                f"be used with selecto_pool: {REFUSED[key]}."
            )
        else:
            return False
        return True


def parse_check() -> tuple[Callable[[Any], Any], str]:
    """psycopg_pool's ``check``: a callable, True (its ``check_connection``:
    an empty query at every checkout) or False/None (no check)."""

    def parse(value: Any) -> Any:
        if isinstance(value, str):
            value = {"true": True, "false": False}.get(value.strip().lower(), value)
        if value is True:
            return psycopg_pool.ConnectionPool.check_connection
        if value is False or value is None:
            return False  # "no check" (None means "invalid" to the caller)
        return value if callable(value) else None

    return parse, (
        "a callable taking the connection, True (psycopg_pool's "
        "ConnectionPool.check_connection) or False/None (no check)"
    )


def parse_callback() -> tuple[Callable[[Any], Any], str]:
    """psycopg_pool's ``reconnect_failed``: a callable taking the pool, or None."""

    def parse(value: Any) -> Any:
        if value is None:
            return False  # "none" (None means "invalid" to the caller)
        return value if callable(value) else None

    return parse, "a callable taking the pool, or None"


def unknown_key(key: Any, place: str, options: Iterable[str], native: bool) -> str:
    """The error for a key that is no option (``native``: where native names
    are read too)."""
    if native:
        hint = did_you_mean(key, {*options, *ACCEPTED})
        also = "; Django's native-pool names: min_size, max_size, timeout"
    else:
        hint = ours_for(key) or did_you_mean(key, options)
        also = ""
    return (
        f"{place} is not a selecto_pool option{hint}; allowed keys: "
        f"{', '.join(sorted(options))}{also}."
    )


def asks_for_native_defaults(pool: Any, enabled_flag: bool | None) -> bool:
    """Whether ``OPTIONS["pool"]`` is written the native way: ``True``, or a
    dict of psycopg_pool's argument names only."""
    if enabled_flag is True:
        return True
    return (
        isinstance(pool, Mapping)
        and bool(pool)
        and all(isinstance(key, str) and key in ACCEPTED for key in pool)
    )


def mixed_sizing_message(native: Mapping[str, str], ours: Mapping[str, str]) -> str:
    """The error for sizes set in both spellings (``key -> where`` each)."""
    first_native = next(iter(native.values()))
    first_ours = next(iter(ours.values()))
    return (
        f"{first_native} and {first_ours} are both set: size the pool with "
        "Django's native names (min_size, max_size, timeout) or with "
        "selecto_pool's (pool_size, max_overflow, checkout_timeout), not both."
    )


def resolve_sizing(
    native: Mapping[str, tuple[Any, str]],
    ours: Mapping[str, str],
    asks_native: bool,
    parse: Callable[[str, Any, str], Any],
) -> dict[str, Any]:
    """``pool_size``, ``max_overflow`` and ``checkout_timeout`` from the native
    names, or nothing when selecto_pool's own sizing applies.

    ``native``: native key -> (raw value, where it was set); ``ours``: the
    selecto_pool sizing keys set anywhere -> where; ``parse(option, raw,
    where)`` validates a value as that option.
    """
    if native and ours:
        raise ImproperlyConfigured(
            mixed_sizing_message({key: at for key, (_, at) in native.items()}, ours)
        )
    if not native and (ours or not asks_native):
        return {}
    min_size = DEFAULT_MIN_SIZE
    if "min_size" in native:
        raw, at = native["min_size"]
        min_size = parse("pool_size", raw, at)
    timeout = DEFAULT_TIMEOUT
    if "timeout" in native:
        raw, at = native["timeout"]
        timeout = parse("checkout_timeout", raw, at)
    max_size = min_size
    if "max_size" in native:
        raw, at = native["max_size"]
        max_size = parse("pool_size", raw, at)
        if max_size < max(min_size, 1):
            default = "" if "min_size" in native else ", psycopg_pool's default"
            raise ImproperlyConfigured(
                f"{at} = {raw!r} is invalid: expected an integer >= 1 and >= "
                f"min_size ({min_size}{default})."
            )
    elif min_size == 0:
        raise ImproperlyConfigured(
            f"{native['min_size'][1]} = 0 without max_size allows no connection "
            "(max_size defaults to min_size): set max_size too."
        )
    return {
        "pool_size": min_size,
        "max_overflow": max_size - min_size,
        "checkout_timeout": timeout,
    }


def did_you_mean(key: Any, known: Iterable[str]) -> str:
    """``" (did you mean 'pool_size'?)"``, or nothing if nothing is close."""
    if not isinstance(key, str) or len(key) > 100:
        return ""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""
