"""Which statements run bound server-side (and so get prepared), and how.

Django binds parameters client-side (nothing to prepare). The pool's cursors
bind server-side, but only statements that can be prepared: a single
SELECT/INSERT/UPDATE/DELETE/WITH with parameters. Everything else (DDL,
several commands in one string, parameterless SQL) runs exactly as Django's
stock cursor runs it. So does a statement the server cannot type (``%s + %s``
with NULLs...): the first time it fails for that reason it re-runs the stock
way, and the decision is remembered for the process. The first server-side
run of a statement inside a transaction is guarded by a savepoint, so such a
failure never aborts the caller's transaction. A statement made stale by a
schema change ("cached plan must not change result type") is deallocated and
re-run once when no transaction is open.

Nothing here knows Django: a cursor describes one run as an ``Attempt`` (its
signature, the server-side way and the stock way) and ``run()`` decides.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any, NamedTuple

import psycopg
from psycopg import pq

from .statements import cache_of

IDLE = pq.TransactionStatus.IDLE

# Errors raised while the server parses or types a statement, before running
# it: the stock (client-side) way may well succeed.
_NOT_PREPARABLE = frozenset(
    {
        "42P18",  # indeterminate_datatype: could not determine data type of $1
        "42725",  # ambiguous_function: operator is not unique
        "42883",  # undefined_function: no operator matches the given types
        "42804",  # datatype_mismatch
        "42P08",  # ambiguous_parameter
        "42846",  # cannot_coerce
        "42601",  # syntax_error, e.g. several commands in one statement
        "42P02",  # undefined_parameter
        # grouping_error: "$1" in SELECT and "$2" in GROUP BY are different
        # expressions to the server even with equal values (Django #34255).
        "42803",
        "08P01",  # protocol_violation: bind supplies N parameters, needs M
    }
)
# The statement was prepared before a schema change or is gone from the server.
_STALE = frozenset({"0A000", "26000", "42P05"})
# Statements missing, or a name taken, though psycopg prepared/freed them here.
_VANISHED = frozenset({"26000", "42P05"})
_STALE_MESSAGE = "cached plan must not change result type"

_PREPARABLE_START = re.compile(
    r"\s*(?:\(\s*)*(?:SELECT|INSERT|UPDATE|DELETE|WITH|VALUES)\b", re.IGNORECASE
)


class _Decisions:
    """A bounded, thread-safe set of statement signatures (process-wide)."""

    def __init__(self, size: int = 10_000):
        self._items: OrderedDict[Hashable, None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def add(self, key: Hashable) -> None:
        if key in self._items:
            return  # the common case, without the lock
        with self._lock:
            self._items[key] = None
            if len(self._items) > self._size:
                self._items.popitem(last=False)


# Signatures that ran server-side without a typing error, and those that can't.
_verified = _Decisions()
_rejected = _Decisions()
# Executions per signature in this process, up to the threshold (see _hot).
_executions: dict[Hashable, int] = {}


def _hot(signature: Hashable, threshold: int | None) -> bool | None:
    """True once a statement ran ``threshold`` times in this process.

    psycopg counts per connection, and the pool hands connections out in
    turn, so a statement would run threshold x pool_size times before being
    prepared everywhere. Counted per process instead, a hot statement is
    prepared on each connection the first time it runs there.
    """
    if threshold is None:
        return None
    seen = _executions.get(signature, 0)
    if seen >= threshold:
        return True
    if len(_executions) > 20_000:
        _executions.clear()  # statements built with varying text; start over
    # Unlocked: a lost increment only delays preparing by one execution.
    _executions[signature] = seen + 1
    return None


def is_preparable(query: object) -> bool:
    """A single DML statement (by its text), i.e. worth binding server-side."""
    if not isinstance(query, str) or not _PREPARABLE_START.match(query):
        return False
    return ";" not in query.rstrip().rstrip(";")


class Attempt(NamedTuple):
    """One execute() or executemany(): its decision key and the two ways to run it."""

    signature: Hashable
    #: Bound server-side; takes psycopg's ``prepare`` argument.
    server_side: Callable[[bool | None], object]
    #: The way Django's default cursor runs it.
    stock: Callable[[], object]


def run(conn: psycopg.Connection[Any], attempt: Attempt, prepare: bool | None) -> None:
    """Run ``attempt`` bound server-side, or the stock way if it must.

    Falls back for statements the server can't type (the decision is
    remembered), guards a first run inside a transaction with a
    savepoint, and reruns a stale statement once outside one.
    """
    key, server_side, _ = attempt
    if key in _rejected:
        return _fall_back(conn, attempt)
    # Without autocommit, psycopg opens the transaction with this very
    # statement: it is in a transaction too.
    in_transaction = not conn.autocommit or (conn.pgconn.transaction_status != IDLE)
    if prepare is None:
        prepare = _hot(key, conn.prepare_threshold)
    if in_transaction and key not in _verified:
        return _guarded(conn, attempt, prepare)
    try:
        server_side(prepare)
    except psycopg.Error as exc:
        note_server_error(conn, exc)
        if in_transaction:
            raise
        if exc.sqlstate in _NOT_PREPARABLE:
            _rejected.add(key)
            return _fall_back(conn, attempt)
        if not _is_stale(exc):
            raise
        # Outside a transaction nothing ran: forget every statement of this
        # connection (psycopg clears its cache on DEALLOCATE ALL), rerun once.
        conn.execute("DEALLOCATE ALL")
        server_side(False)
    _verified.add(key)


def _guarded(
    conn: psycopg.Connection[Any], attempt: Attempt, prepare: bool | None
) -> None:
    """First server-side run inside a transaction: under a savepoint."""
    conn.execute("SAVEPOINT selecto_pool_probe")
    try:
        attempt.server_side(prepare)
    except psycopg.Error as exc:
        note_server_error(conn, exc)
        if exc.sqlstate not in _NOT_PREPARABLE:
            # A real error (constraint, timeout...): the transaction is
            # aborted exactly as with the stock cursor; rolling it back, to
            # Django's savepoint or entirely, drops this savepoint too.
            raise
        conn.execute("ROLLBACK TO SAVEPOINT selecto_pool_probe")
        conn.execute("RELEASE SAVEPOINT selecto_pool_probe")
        _rejected.add(attempt.signature)
        return _fall_back(conn, attempt)
    conn.execute("RELEASE SAVEPOINT selecto_pool_probe")
    _verified.add(attempt.signature)


def _fall_back(conn: psycopg.Connection[Any], attempt: Attempt) -> None:
    """Run ``attempt`` the stock way, counted in ``cache_fallbacks``."""
    if cache := cache_of(conn):
        cache.fallbacks += 1
    attempt.stock()


def note_server_error(conn: psycopg.Connection[Any], exc: psycopg.Error) -> None:
    """Bookkeeping after a server-side run failed, before any retry."""
    if exc.sqlstate in _VANISHED:
        # Typically a PgBouncer in transaction mode that doesn't carry
        # prepared statements across server connections.
        conn.prepare_threshold = None
        cache = cache_of(conn)
        if cache is not None and cache.on_vanished is not None:
            cache.on_vanished()
    if _is_stale(exc) and (cache := cache_of(conn)) is not None:
        # Inside a transaction nothing can be retried: forget the statements
        # so that the next run prepares afresh (psycopg sends the DEALLOCATE
        # ALL after the next successful command, e.g. the ROLLBACK).
        cache.invalidate()


def signature(query: str, params: Any) -> Hashable:
    """The statement and the Python types of its parameters (which decide the
    server-side types, and so whether the server can type the statement)."""
    return query, _types(params)


def batch_signature(query: str, rows: Iterable[Any]) -> Hashable:
    """The statement and every distinct tuple of parameter types of a batch:
    any row can be the one the server can't type."""
    return query, "executemany", tuple(dict.fromkeys(_types(row) for row in rows))


def _types(params: Any) -> tuple[Any, ...]:
    if isinstance(params, dict):
        return tuple(sorted((k, type(v)) for k, v in params.items()))
    return tuple(type(param) for param in params)


def _is_stale(exc: psycopg.Error) -> bool:
    return exc.sqlstate in _STALE and (
        exc.sqlstate != "0A000" or _STALE_MESSAGE in str(exc)
    )
