"""Which statements run bound server-side (and so get prepared), and how.

Django binds parameters client-side (nothing to prepare). The pool's cursors
bind server-side, but only statements that can be prepared: a single
SELECT/INSERT/UPDATE/DELETE/WITH with parameters, at most as many as the
protocol carries. Everything else (DDL, several commands in one string,
parameterless SQL, 65,536 parameters or more) runs exactly as Django's stock
cursor runs it. So does a statement the server cannot type (``%s + %s`` with
NULLs...): the first time it fails for that reason it re-runs the stock way,
and the decision is remembered for the process.

A statement runs server-side inside a transaction without a guard only once
it has run server-side successfully ("verified"); before, a savepoint guards
it, so that a typing failure never aborts the caller's transaction. When a
verified statement later fails to type, or its prepared copy is stale ("cached
plan must not change result type"), the schema changed under it: the
decision is dropped (and at the second time, the statement runs the stock
way for good), and every connection deallocates its statements before it
reuses one. That failure itself aborts its transaction, as nothing can be
retried there; outside a transaction the statement is re-run at once.

Nothing here knows Django, nor does I/O of its own: ``plan()`` yields the
steps (run server-side, run the stock way, a savepoint command) and a runner
performs them, ``run()`` on a sync connection, ``async_execution.run()`` on
an async one; a cursor describes one run as an ``Attempt`` (its signature,
the server-side way and the stock way). What the process decided about each
signature is kept in ``decisions``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Generator
from typing import Any, NamedTuple

import psycopg
from psycopg import pq

from .decisions import (
    ONE_RUN,
    REJECTED,
    VERIFIED,
    counted,
    decisions,
    rejected,
    relapsed,
    verified,
)
from .own_statements import run_own
from .statements import AnyConnection, cache_of, distrust_prepared

logger = logging.getLogger("selecto_pool.statements")

IDLE = pq.TransactionStatus.IDLE
INTRANS = pq.TransactionStatus.INTRANS
#: The protocol counts parameters in 16 bits; libpq refuses more, unsent.
MAX_PARAMETERS = 65_535

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

_SAVEPOINT = "SAVEPOINT selecto_pool_probe"
_ROLLBACK_TO = "ROLLBACK TO SAVEPOINT selecto_pool_probe"
_RELEASE = "RELEASE SAVEPOINT selecto_pool_probe"


def is_preparable(query: object) -> bool:
    """A single DML statement (by its text), i.e. worth binding server-side."""
    if not isinstance(query, str) or not _PREPARABLE_START.match(query):
        return False
    return ";" not in query.rstrip().rstrip(";")


def binds_server_side(query: object, params: Any) -> bool:
    """Whether ``execute(query, params)`` is worth binding server-side."""
    return params is not None and is_preparable(query) and not _too_many(params)


def batch_binds_server_side(query: object, rows: list[Any]) -> bool:
    """Whether ``executemany(query, rows)`` is worth binding server-side."""
    return is_preparable(query) and not any(map(_too_many, rows))


def _too_many(params: Any) -> bool:
    # Objects without a length are psycopg's to refuse, as in the stock way.
    return hasattr(params, "__len__") and len(params) > MAX_PARAMETERS


class Attempt(NamedTuple):
    """One execute() or executemany(): its decision key and the two ways to run it."""

    signature: int
    #: Bound server-side; takes psycopg's ``prepare`` argument.
    server_side: Callable[[bool | None], object]
    #: The way Django's default cursor runs it.
    stock: Callable[[], object]


class Step(NamedTuple):
    """What ``plan()`` asks its runner to do next on the connection."""

    action: str  # SERVER_SIDE, STOCK or COMMAND
    prepare: bool | None = None
    command: str = ""


SERVER_SIDE = "server_side"  # the attempt bound server-side, with ``prepare``
STOCK = "stock"  # the attempt the stock way
COMMAND = "command"  # ``command`` (a savepoint) on the connection

#: The decisions as a generator of steps: a runner performs each step and
#: sends back nothing, or throws in the ``psycopg.Error`` it raised. The
#: same decisions drive a sync connection (``run()``) and an async one
#: (``async_execution.run()``), as psycopg's own generators drive its I/O.
Plan = Generator[Step, None, None]


def run(conn: psycopg.Connection[Any], attempt: Attempt, prepare: bool | None) -> None:
    """Run ``attempt`` bound server-side, or the stock way if it must.

    Falls back for statements the server can't type (the decision is
    remembered), guards a run inside a transaction with a savepoint until
    the statement is verified, and recovers from a schema change.
    """
    steps = plan(conn, attempt.signature, prepare)
    failure: psycopg.Error | None = None
    while True:
        try:
            step = steps.send(None) if failure is None else steps.throw(failure)
        except StopIteration:
            return
        failure = None
        try:
            if step.action == SERVER_SIDE:
                attempt.server_side(step.prepare)
            elif step.action == STOCK:
                attempt.stock()
            else:
                run_own(conn, step.command)
        except psycopg.Error as exc:
            failure = exc


def plan(conn: AnyConnection, key: int, prepare: bool | None) -> Plan:
    """The steps that run a statement of signature ``key`` on ``conn``.

    Reads the connection's state (autocommit, transaction status,
    ``prepare_threshold``, its cache), never does I/O itself.
    """
    state = decisions.get(key)
    if state & REJECTED:
        yield from _fall_back(conn)
        return
    # Without autocommit, psycopg opens the transaction with this very
    # statement: it is in a transaction too.
    in_transaction = not conn.autocommit or (conn.pgconn.transaction_status != IDLE)
    if prepare is None:
        prepare = _hot(key, state, conn.prepare_threshold)
    if in_transaction and not state & VERIFIED:
        yield from _guarded(conn, key, prepare)
        return
    try:
        yield Step(SERVER_SIDE, prepare)
    except psycopg.Error as exc:
        note_server_error(conn, exc)
        if state & VERIFIED and _retypes(exc):
            # The schema changed under a statement that typed before.
            state = decisions.update(key, relapsed)
            logger.info(
                "a statement that ran server-side fails to type now (SQLSTATE "
                "%s): the schema changed; every connection deallocates its "
                "prepared statements before reusing one",
                exc.sqlstate,
            )
            distrust_prepared()
        if in_transaction or not (_retypes(exc) or _is_stale(exc)):
            raise
        # Outside a transaction nothing ran: run it again, afresh.
        if state & REJECTED or not (yield from _rerun_afresh(conn, exc)):
            _reject(key, exc)
            yield from _fall_back(conn)
            return
    if not state & VERIFIED:
        decisions.update(key, verified)


def _hot(key: int, state: int, threshold: int | None) -> bool:
    """True once a statement ran ``threshold`` times in this process.

    psycopg counts per connection, and the pool hands connections out in
    turn, so a statement would run threshold x pool_size times before being
    prepared everywhere. Counted per process instead, a hot statement is
    prepared on each connection the first time it runs there.
    """
    if threshold is None:
        return False
    if state // ONE_RUN >= threshold:
        return True
    decisions.update(key, counted(threshold))
    return False


def _guarded(conn: AnyConnection, key: int, prepare: bool | None) -> Plan:
    """A server-side run inside a transaction, before it is verified."""
    yield Step(COMMAND, command=_SAVEPOINT)
    try:
        yield Step(SERVER_SIDE, prepare)
    except psycopg.Error as exc:
        note_server_error(conn, exc)
        if not (_retypes(exc) or _is_stale(exc)):
            # A real error (constraint, timeout...): the transaction is
            # aborted exactly as with the stock cursor; rolling it back, to
            # Django's savepoint or entirely, drops this savepoint too. One
            # refused before anything was sent (a value psycopg can't adapt)
            # left the transaction going: so does the savepoint, unless
            # released.
            if conn.pgconn.transaction_status == INTRANS:
                yield Step(COMMAND, command=_RELEASE)
            raise
        reused = _reused(conn)  # before the next command resets it
        yield Step(COMMAND, command=_ROLLBACK_TO)
        if not (yield from _rerun_afresh(conn, exc, reused, guarded=True)):
            yield Step(COMMAND, command=_RELEASE)
            _reject(key, exc)
            yield from _fall_back(conn)
            return
    yield Step(COMMAND, command=_RELEASE)
    decisions.update(key, verified)


def _rerun_afresh(
    conn: AnyConnection,
    exc: psycopg.Error,
    reused: bool | None = None,
    guarded: bool = False,
) -> Generator[Step, None, bool]:
    """Rerun a failed server-side run unprepared, if a fresh typing could help.

    It can when the run used a copy prepared earlier on this connection,
    typed before a schema change, or one the server lost. False when it
    can't, or when the rerun fails to type too (nothing ran: the savepoint,
    if ``guarded``, is rolled back).
    """
    if reused is None:
        reused = _reused(conn)
    if not (reused or _is_stale(exc)):
        return False
    if cache := cache_of(conn):
        # This connection's copies were all typed before; and the server's
        # statements are not what psycopg thinks if one is missing or taken.
        cache.invalidate(deallocate_all=_is_stale(exc))
    try:
        yield Step(SERVER_SIDE, False)
    except psycopg.Error as again:
        note_server_error(conn, again)
        # An executemany() batch aborted as a whole (psycopg's pipeline)
        # reports PipelineAborted rather than the typing error: nothing of
        # it ran, so the stock way may run it (and raise a real error).
        aborted = isinstance(again, psycopg.errors.PipelineAborted)
        if again.sqlstate not in _NOT_PREPARABLE and not aborted:
            raise
        if guarded:
            yield Step(COMMAND, command=_ROLLBACK_TO)
        return False
    return True


def _reject(key: int, exc: psycopg.Error) -> None:
    """Remember that a statement runs the stock way in this process."""
    decisions.update(key, rejected)
    # Once per statement and process (the SQL stays out: it may hold values).
    logger.debug(
        "a statement runs the stock way (unprepared) from now on: the server "
        "could not type it bound server-side (SQLSTATE %s)",
        exc.sqlstate,
    )


def _fall_back(conn: AnyConnection) -> Plan:
    """Run the attempt the stock way, counted in ``cache_fallbacks``."""
    if cache := cache_of(conn):
        cache.fallbacks += 1
    yield Step(STOCK)


def note_server_error(conn: AnyConnection, exc: psycopg.Error) -> None:
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


def _reused(conn: AnyConnection) -> bool:
    cache = cache_of(conn)
    return cache is not None and cache.reused


def _retypes(exc: psycopg.Error) -> bool:
    """A typing error, or a prepared copy typed before a schema change."""
    return exc.sqlstate in _NOT_PREPARABLE or (
        exc.sqlstate == "0A000" and _STALE_MESSAGE in str(exc)
    )


def _is_stale(exc: psycopg.Error) -> bool:
    return exc.sqlstate in _STALE and (
        exc.sqlstate != "0A000" or _STALE_MESSAGE in str(exc)
    )
