"""Keeping a password out of the messages built from connection errors.

libpq never prints the password, but it and the server print the other
connection parameters (host, port, user and database names), and a
connection string written slightly wrong can carry part of the password in
one of them (libpq reads ``postgres://u:p@ss@host`` as host ``ss@host``).
The pool passes every connection error through ``redacted()`` before
logging or raising it: the password, and any run of 4 or more of its
characters found in another parameter, are masked wherever they occur.
Words of the message itself are left alone, even those a password happens
to contain ("password authentication failed").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import psycopg

MASK = "***"
# Shorter runs are common to too many strings to mean anything.
_SHORTEST = 4


def redact(text: str, secret: str | None, values: Iterable[str] = ()) -> str:
    """``text`` with ``secret``, and its runs of 4+ characters found in
    ``values`` (the other connection parameters), masked."""
    if not secret:
        return text
    shortest = min(_SHORTEST, len(secret))
    leaks = {run for value in values for run in _shared_runs(value, secret, shortest)}
    if len(secret) >= _SHORTEST:
        leaks.add(secret)
    for leak in sorted(leaks, key=len, reverse=True):
        text = text.replace(leak, MASK)
    return text


def _shared_runs(value: str, secret: str, shortest: int) -> list[str]:
    """The longest runs of ``value`` that occur in ``secret``, left to right."""
    runs = []
    start = 0
    while start <= len(value) - shortest:
        length = 0
        # A run is never longer than the secret.
        while (
            length < len(secret)
            and start + length < len(value)
            and value[start : start + length + 1] in secret
        ):
            length += 1
        if length >= shortest:
            runs.append(value[start : start + length])
            start += length
        else:
            start += 1
    return runs


def connection_secrets(
    conninfo: str, kwargs: Mapping[str, Any]
) -> tuple[str | None, list[str]]:
    """The password psycopg connects with, and its other parameters' values."""
    params: dict[str, Any] = {}
    if conninfo:
        try:
            params = psycopg.conninfo.conninfo_to_dict(conninfo)
        except psycopg.Error:
            params = {}
    params.update(kwargs)
    password = params.pop("password", None)
    values = [str(value) for value in params.values() if value is not None]
    return (str(password) if password is not None else None), values


def redacted(
    exc: psycopg.Error, secret: str | None, values: Iterable[str] = ()
) -> psycopg.Error:
    """``exc``, or an error of the same class whose message masks ``secret``."""
    text = str(exc)
    clean = redact(text, secret, values)
    return exc if clean == text else type(exc)(clean)
