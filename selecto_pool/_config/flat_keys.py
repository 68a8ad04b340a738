"""Flat ``OPTIONS`` keys that nobody reads: a typo caught before libpq sees it.

Flat keys are shared by the pool, Django's PostgreSQL backend, psycopg and
libpq, and a ``DATABASE_URL`` query string lands there. libpq refuses a
keyword it doesn't know when it connects, which the pool does in the
background: ``?pool_sise=3`` would surface seconds later as a checkout that
timed out. libpq's keywords are known (``PQconndefaults``, which psycopg
exposes as ``pq.Conninfo.get_defaults()``), so an unknown key is an error
when the settings are read, with the nearest valid name.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from psycopg import pq

from .native import SIZING, did_you_mean
from .options import OPTION_NAMES, POOL_KEYS

#: Keys Django's PostgreSQL backend reads itself, and psycopg's ``connect()``
#: arguments that are not libpq keywords (Django passes OPTIONS on to it).
DJANGO_KEYS = frozenset(
    {
        "pool",
        "isolation_level",
        "assume_role",
        "server_side_binding",
        "prepare_threshold",
        "cursor_factory",
        "row_factory",
        "context",
        "autocommit",
    }
)

_LIBPQ_DOCS = "https://www.postgresql.org/docs/current/libpq-connect.html"


@functools.cache
def libpq_keywords() -> frozenset[str]:
    """The connection keywords of the libpq psycopg uses."""
    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


def check_flat_keys(alias: str, settings_dict: Mapping[str, Any]) -> None:
    """Raise ``ImproperlyConfigured`` for a flat ``OPTIONS`` key nobody reads."""
    options = settings_dict.get("OPTIONS") or {}
    known = POOL_KEYS | DJANGO_KEYS | libpq_keywords()
    for key in options:
        if isinstance(key, str) and key in known:
            continue
        shown = repr(key) if len(repr(key)) <= 60 else f"{repr(key)[:57]}..."
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}]['OPTIONS'][{shown}] is neither a selecto_pool "
            "option, nor a libpq connection parameter, nor a key of Django's "
            f"PostgreSQL backend{did_you_mean(key, known)}. Pool options: "
            f"{', '.join(sorted(OPTION_NAMES | SIZING.keys()))}. Django's: "
            f"{', '.join(sorted(DJANGO_KEYS))}. libpq's: see {_LIBPQ_DOCS}."
        )
