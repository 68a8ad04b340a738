"""``start_pool()``'s connection string or URL, as psycopg ``connect()`` arguments.

libpq ends a URL's user name and password at the *first* ``@``, urllib and
django-environ at the *last* one: with an unencoded ``@`` in the password,
libpq connects to a host named after the rest of the password and says so in
its errors. URLs are read here as django-environ reads them (the same
``DATABASE_URL`` then works in both places), and handed to libpq with the
user name and password percent-encoded. Errors never echo the string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

import psycopg
from django.core.exceptions import ImproperlyConfigured

# libpq's URI schemes; the authority ends where urllib ends it.
_URL = re.compile(r"(?s)(postgres(?:ql)?://)([^/?#]*)(.*)")


def connect_arguments(config: Any, name: str) -> dict[str, Any]:
    """``config`` (a mapping, or a libpq connection string or URL) as
    psycopg ``connect()`` keyword arguments."""
    if isinstance(config, Mapping):
        return dict(config)
    if not isinstance(config, str):
        raise TypeError(
            "start_pool() takes a connection string or URL, or a mapping of "
            f"psycopg.connect() arguments; got {type(config).__name__}"
        )
    conninfo = _encoded_userinfo(config, name)
    try:
        return psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        pass
    # Raised outside the except clause: libpq's message may quote the string
    # (and so a password), and would be chained to this error otherwise.
    raise ImproperlyConfigured(f"start_pool({name!r}): invalid connection string")


def _encoded_userinfo(config: str, name: str) -> str:
    """A URL with its user name and password percent-encoded for libpq."""
    match = _URL.match(config)
    if match is None:
        return config  # "host=... password=..." is unambiguous
    scheme, authority, rest = match.groups()
    userinfo, at, hosts = authority.rpartition("@")
    path = rest.partition("?")[0].partition("#")[0]
    if "@" in path:
        # The authority ended early: a "/" in the password, which neither
        # urllib nor libpq can read; guessing would connect somewhere else.
        raise ImproperlyConfigured(
            f"start_pool({name!r}): the URL has an '@' after its host: "
            "percent-encode '/', '?', '#' and '@' in the user name and password "
            "(%2F, %3F, %23, %40)."
        )
    if not at:
        return config
    user, colon, password = userinfo.partition(":")
    encoded = _encode(user) + (f":{_encode(password)}" if colon else "")
    return f"{scheme}{encoded}@{hosts}{rest}"


def _encode(part: str) -> str:
    # Decoded first, so that an already encoded part stays what it was.
    return quote(unquote(part), safe="")
