"""Prepared statements for Django's ORM, with Django's semantics intact.

psycopg already prepares statements (``prepare_threshold``) and keeps an LRU
of them per connection (``prepared_max``). Three things stop Django from using
that, and this module changes exactly those:

1. Django binds parameters client-side (nothing to prepare). ``SelectoCursor``
   binds server-side, but only statements that can be prepared: a single
   SELECT/INSERT/UPDATE/DELETE/WITH with parameters. Everything else (DDL,
   several commands in one string, parameterless SQL) runs exactly as Django's
   stock cursor runs it. So does a statement the server cannot type
   (``%s + %s`` with NULLs...): the first time it fails for that reason it
   re-runs the stock way, and the decision is remembered for the process.
   The first server-side run of a statement inside a transaction is guarded by
   a savepoint, so such a failure never aborts the caller's transaction.
2. Integers are sent typed like SQL literals (int4, else int8, else numeric)
   and floats as numeric, not psycopg's smallest-fit int2, so that
   ``RawSQL("%s + %s", (30000, 30000))`` is 60000 as with literals.
3. psycopg forgets every prepared statement on each ROLLBACK, which Django
   does all the time (tests, ``atomic`` failures); statements survive a
   rollback in PostgreSQL, so ``StatementCache`` keeps them. A statement made
   stale by a schema change ("cached plan must not change result type") is
   deallocated and re-run once when no transaction is open.

``StatementCache`` subclasses psycopg's (private) ``PrepareManager``; the
versions it is tested with are pinned in pyproject.toml.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, NamedTuple

import psycopg
from django.db.backends.postgresql.base import CursorMixin
from psycopg import pq
from psycopg._preparing import Prepare, PrepareManager  # see the module docstring
from psycopg.types.numeric import FloatDumper, IntBinaryDumper, IntDumper

COMMAND_OK = pq.ExecStatus.COMMAND_OK
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
# psycopg clears its cache on these command tags; ROLLBACK is left out.
_CLEARS_SERVER_STATE = re.compile(rb"^(?:DROP|ALTER|DISCARD ALL|DEALLOCATE ALL)\b")


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


_UNCOUNTED = (b"", ())  # the cache key of statements run the stock way

CACHE_COUNTERS = (
    "statements",
    "hits",
    "misses",
    "evictions",
    "invalidations",
    "fallbacks",
)


class StatementCache(PrepareManager):
    """psycopg's per-connection LRU of prepared statements, made Django-safe.

    Counts hits, misses (statements prepared), evictions, invalidations and
    fallbacks, for ``pool_stats()``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.hits = self.misses = self.evictions = self.invalidations = 0
        self.fallbacks = 0
        self._count_next = True

    @property
    def statements(self) -> int:
        return len(self._names)

    def get(self, query: Any, prepare: bool | None = None) -> tuple[Prepare, bytes]:
        # Statements run the stock way (prepare=False) aren't counted towards
        # preparing: their text embeds the values and would flood the LRU.
        self._count_next = prepare is not False
        decision = super().get(query, prepare)
        if decision[0] is Prepare.YES:
            self.hits += 1
        elif decision[0] is Prepare.SHOULD:
            self.misses += 1
        return decision

    def maybe_add_to_cache(self, query: Any, prep: Prepare, name: bytes) -> Any:
        if not self._count_next:
            # Still returned, so that validate() sees DEALLOCATE ALL & co.
            return _UNCOUNTED
        key = super().maybe_add_to_cache(query, prep, name)
        if key is None and prep is Prepare.SHOULD:
            # psycopg evicts only when a *new* key comes, letting the server
            # hold prepared_max + 1 statements meanwhile; evict right away.
            self._rotate()
        return key

    def validate(self, key: Any, prep: Prepare, name: bytes, results: Any) -> None:
        if key is _UNCOUNTED:
            self._should_discard(prep, results)
            return
        super().validate(key, prep, name, results)

    def _should_discard(self, prep: Prepare, results: Sequence[Any]) -> bool:
        if self._names or prep == Prepare.SHOULD:
            for result in results:
                if result.status != COMMAND_OK:
                    continue
                command = result.command_status
                if command and _CLEARS_SERVER_STATE.match(command):
                    return self.invalidate()
        return False

    def clear(self) -> bool:
        # psycopg calls this after every ROLLBACK (connection or transaction
        # block) and then sends DEALLOCATE ALL; prepared statements survive a
        # rollback in PostgreSQL, so keep them. invalidate() really clears.
        return False

    def invalidate(self) -> bool:
        """Forget every statement (and DEALLOCATE ALL on the next command)."""
        self.invalidations += 1
        return super().clear()

    def _rotate(self) -> None:
        if len(self._names) > self.prepared_max:
            self.evictions += 1
        super()._rotate()

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in CACHE_COUNTERS}


class _LiteralIntDumper(IntDumper):
    """Types ints like SQL literals: int4, else int8, else numeric (never int2)."""

    _int2_dumper = IntDumper._int4_dumper


class _LiteralIntBinaryDumper(IntBinaryDumper):
    _int2_dumper = IntBinaryDumper._int4_dumper


class _FloatAsNumericDumper(FloatDumper):
    """Floats typed as numeric, as a literal ``1.5`` is (quoting is unchanged)."""

    oid = psycopg.postgres.types["numeric"].oid


def install(conn: psycopg.Connection[Any], cache_size: int, threshold: int) -> None:
    """Give ``conn`` the Django-safe cache and literal-like number types."""
    conn._prepared = StatementCache()  # type: ignore[attr-defined]
    conn.prepare_threshold = threshold
    conn.prepared_max = cache_size
    conn.adapters.register_dumper(int, _LiteralIntDumper)
    conn.adapters.register_dumper(int, _LiteralIntBinaryDumper)
    conn.adapters.register_dumper(float, _FloatAsNumericDumper)


def cache_of(conn: psycopg.Connection[Any]) -> StatementCache | None:
    cache = getattr(conn, "_prepared", None)
    return cache if isinstance(cache, StatementCache) else None


class _Attempt(NamedTuple):
    """One execute() or executemany(): its decision key and the two ways to run it."""

    signature: Hashable
    #: Bound server-side; takes psycopg's ``prepare`` argument.
    server_side: Callable[[bool | None], object]
    #: The way Django's default cursor runs it.
    stock: Callable[[], object]


class SelectoCursor(CursorMixin, psycopg.Cursor[Any]):
    """Django's cursor, binding server-side (and so preparing) where it's safe."""

    #: The (query, params) of the last execute(), for last_executed_query().
    executed: tuple[Any, Any] | None = None

    def execute(  # type: ignore[override]
        self,
        query: Any,
        params: Any = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> SelectoCursor:
        self.executed = (query, params)
        if params is None or not is_preparable(query):
            return self._execute_stock(query, params)
        execute = super().execute
        attempt = _Attempt(
            _signature(query, params),
            lambda prepare: execute(query, params, prepare=prepare, binary=binary),
            lambda: self._execute_stock(query, params),
        )
        return self._server_side(attempt, prepare)

    def executemany(  # type: ignore[override]
        self, query: Any, params_seq: Iterable[Any], *, returning: bool = False
    ) -> None:
        """The same decisions as ``execute()``, for the batch's parameter types.

        psycopg prepares every statement run with ``executemany()``, and sends
        the batch in one pipeline: one the server can't type fails before any
        row ran, and the whole batch runs the stock way.
        """
        rows = list(params_seq)
        if not rows or returning or not psycopg.Pipeline.is_supported():
            # returning: the stock way would keep only the last row's results.
            # No pipeline: psycopg commits row by row in autocommit, and a
            # failed row can't be retried without running the others twice.
            super().executemany(query, rows, returning=returning)
            return
        if not is_preparable(query):
            self._executemany_stock(query, rows)
            return
        executemany = super().executemany
        attempt = _Attempt(
            _batch_signature(query, rows),
            lambda prepare: executemany(query, rows, returning=returning),
            lambda: self._executemany_stock(query, rows),
        )
        self._server_side(attempt, prepare=True)

    def _server_side(self, attempt: _Attempt, prepare: bool | None) -> SelectoCursor:
        """Run ``attempt`` bound server-side, or the stock way if it must.

        Falls back for statements the server can't type (the decision is
        remembered), guards a first run inside a transaction with a
        savepoint, and reruns a stale statement once outside one.
        """
        signature, run, _ = attempt
        if signature in _rejected:
            return self._fall_back(attempt)
        # Without autocommit, psycopg opens the transaction with this very
        # statement: it is in a transaction too.
        in_transaction = not self.connection.autocommit or (
            self.connection.pgconn.transaction_status != IDLE
        )
        if prepare is None:
            prepare = _hot(signature, self.connection.prepare_threshold)
        if in_transaction and signature not in _verified:
            return self._guarded(attempt, prepare)
        try:
            run(prepare)
        except psycopg.Error as exc:
            _note_server_error(self.connection, exc)
            if in_transaction:
                raise
            if exc.sqlstate in _NOT_PREPARABLE:
                _rejected.add(signature)
                return self._fall_back(attempt)
            if not _is_stale(exc):
                raise
            # Outside a transaction nothing ran: forget every statement of this
            # connection (psycopg clears its cache on DEALLOCATE ALL), rerun once.
            self.connection.execute("DEALLOCATE ALL")
            run(False)
        _verified.add(signature)
        return self

    def _guarded(self, attempt: _Attempt, prepare: bool | None) -> SelectoCursor:
        """First server-side run inside a transaction: under a savepoint."""
        self.connection.execute("SAVEPOINT selecto_pool_probe")
        try:
            attempt.server_side(prepare)
        except psycopg.Error as exc:
            _note_server_error(self.connection, exc)
            if exc.sqlstate not in _NOT_PREPARABLE:
                # A real error (constraint, timeout...): the transaction is
                # aborted exactly as with the stock cursor; rolling it back, to
                # Django's savepoint or entirely, drops this savepoint too.
                raise
            self.connection.execute("ROLLBACK TO SAVEPOINT selecto_pool_probe")
            self.connection.execute("RELEASE SAVEPOINT selecto_pool_probe")
            _rejected.add(attempt.signature)
            return self._fall_back(attempt)
        self.connection.execute("RELEASE SAVEPOINT selecto_pool_probe")
        _verified.add(attempt.signature)
        return self

    def _fall_back(self, attempt: _Attempt) -> SelectoCursor:
        """Run ``attempt`` the stock way, counted in ``cache_fallbacks``."""
        if cache := cache_of(self.connection):
            cache.fallbacks += 1
        attempt.stock()
        return self

    def _execute_stock(self, query: Any, params: Any) -> SelectoCursor:
        """Exactly what Django's default (client-side binding) cursor sends."""
        if params is not None:
            query = psycopg.ClientCursor(self.connection).mogrify(query, params)
        super().execute(query, None, prepare=False)
        return self

    def _executemany_stock(self, query: Any, rows: list[Any]) -> None:
        """What Django's default cursor does: client-side binding, one pipeline
        (all rows or none); the total row count is carried over."""
        with psycopg.ClientCursor(self.connection) as stock:
            stock.executemany(query, rows)
            self._rowcount = stock.rowcount


def _note_server_error(conn: psycopg.Connection[Any], exc: psycopg.Error) -> None:
    """Bookkeeping after a server-side run failed, before any retry."""
    if exc.sqlstate in _VANISHED:
        # Typically a PgBouncer in transaction mode that doesn't carry
        # prepared statements across server connections.
        conn.prepare_threshold = None
        pool = getattr(conn, "_pool", None)
        if pool is not None and hasattr(pool, "statements_vanished"):
            pool.statements_vanished()
    if _is_stale(exc) and (cache := cache_of(conn)) is not None:
        # Inside a transaction nothing can be retried: forget the statements
        # so that the next run prepares afresh (psycopg sends the DEALLOCATE
        # ALL after the next successful command, e.g. the ROLLBACK).
        cache.invalidate()


def _signature(query: str, params: Any) -> Hashable:
    """The statement and the Python types of its parameters (which decide the
    server-side types, and so whether the server can type the statement)."""
    return query, _types(params)


def _batch_signature(query: str, rows: Iterable[Any]) -> Hashable:
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
