"""The per-connection prepared-statement cache, made Django-safe and bounded.

psycopg already prepares statements (``prepare_threshold``) and keeps an LRU
of them per connection (``prepared_max``). What about it doesn't fit Django,
and what this module changes:

* psycopg forgets every prepared statement on each ROLLBACK, which Django
  does all the time (tests, ``atomic`` failures); statements survive a
  rollback in PostgreSQL, so ``StatementCache`` keeps them.
* psycopg bounds the cache by a count only; a statement's server memory
  grows with its text and its parameters (an ``IN`` list of 1000 ids takes
  about 0.9 MiB), so the cache is also bounded by an estimate of it, and a
  statement estimated above a sixteenth of that bound is never prepared.
* psycopg evicts only when a new statement comes, and forgets a statement
  whose first prepared run failed without deallocating it: the server would
  hold more than the bound; here it never does.
* When a schema change shows (``distrust_prepared()``), every connection
  deallocates its statements before it reuses one.

Which statements are bound server-side at all is decided in ``execution``;
numbers are typed in ``literals``. ``StatementCache`` subclasses psycopg's
private ``PrepareManager``, reached through ``_compat``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import psycopg
from psycopg import pq
from psycopg.abc import PQGen

from .._compat import Prepare, PrepareManager, prepare_manager_of, set_prepare_manager
from . import literals
from .own_statements import arun_own, run_own

logger = logging.getLogger("selecto_pool.statements")

COMMAND_OK = pq.ExecStatus.COMMAND_OK

#: A pooled connection, sync or async: the cache and the decisions about it
#: read and set its state only, which both kinds share.
AnyConnection: TypeAlias = "psycopg.Connection[Any] | psycopg.AsyncConnection[Any]"

# psycopg clears its cache on these command tags; ROLLBACK is left out.
_CLEARS_SERVER_STATE = re.compile(rb"^(?:DROP|ALTER|DISCARD ALL|DEALLOCATE ALL)\b")

_UNCOUNTED = (b"", ())  # the cache key of statements run the stock way

CACHE_COUNTERS = (
    "statements",
    "hits",
    "misses",
    "evictions",
    "invalidations",
    "fallbacks",
)

#: The estimate of a prepared statement's server memory, in bytes: fixed,
#: per byte of SQL text, per parameter. Above what PostgreSQL 15 and 18 hold
#: for the ORM's statements, generic plan included (measured: see
#: docs/prepared-statements.md); views and partitions can take more.
COST_BASE = 16 * 1024
COST_PER_BYTE = 192
COST_PER_PARAMETER = 128
#: A statement estimated above this share of the bound is never prepared.
MAX_STATEMENT_SHARE = 16

# Bumped by distrust_prepared(); each cache compares it at every lookup.
_distrust = 0
_FLUSHING = -1  # a cache's trust while its DEALLOCATE ALL is pending


def distrust_prepared() -> None:
    """Make every connection deallocate its statements before reusing one.

    For when a schema change has shown: a statement's copies on the other
    connections were typed before it and could fail the same way.
    """
    global _distrust
    _distrust += 1


def cost(key: tuple[bytes, Sequence[Any]]) -> int:
    """The estimated server memory of a statement, from psycopg's cache key."""
    query, types = key
    return COST_BASE + COST_PER_BYTE * len(query) + COST_PER_PARAMETER * len(types)


class StatementCache(PrepareManager):
    """psycopg's per-connection LRU of prepared statements, made Django-safe.

    Bounded by ``prepared_max`` statements and ``max_bytes`` of estimated
    server memory. Counts hits, misses (statements prepared), evictions,
    invalidations and fallbacks, for ``pool_stats()``.
    """

    def __init__(
        self, max_bytes: int, on_vanished: Callable[[], None] | None = None
    ) -> None:
        super().__init__()
        self.hits = self.misses = self.evictions = self.invalidations = 0
        self.fallbacks = 0
        #: Estimated server memory of the statements prepared here.
        self.bytes = 0
        self.max_bytes = max_bytes
        #: Whether the last lookup reused a statement prepared before it.
        self.reused = False
        self._count_next = True
        # The distrust_prepared() generation this cache is clean for.
        self._trust = _distrust
        self._trust_after_flush = _distrust
        #: Called when the server lost statements this cache prepared (the
        #: pool counts them; see SelectoPool.statements_vanished).
        self.on_vanished = on_vanished

    @property
    def statements(self) -> int:
        return len(self._names)

    def get(self, query: Any, prepare: bool | None = None) -> tuple[Prepare, bytes]:
        self.reused = False
        if self._trust != _distrust:
            if self._trust != _FLUSHING:
                self.invalidate()  # a schema change showed since the last lookup
            if self._trust == _FLUSHING:
                # Nothing is prepared until psycopg's DEALLOCATE ALL (sent
                # after this statement) ran, or it would drop the new one.
                self._count_next = False
                return Prepare.NO, b""
        # Statements run the stock way (prepare=False) aren't counted towards
        # preparing: their text embeds the values and would flood the LRU.
        self._count_next = prepare is not False
        decision = super().get(query, prepare)
        if decision[0] is Prepare.YES:
            self.hits += 1
            self.reused = True
        elif self._count_next and self._too_big(query):
            # Not worth a sixteenth of the cache, nor its text in _counts.
            self._count_next = False
            return Prepare.NO, b""
        elif decision[0] is Prepare.SHOULD:
            self.misses += 1
        return decision

    def _too_big(self, query: Any) -> bool:
        return cost(self.key(query)) * MAX_STATEMENT_SHARE > self.max_bytes

    def maybe_add_to_cache(self, query: Any, prep: Prepare, name: bytes) -> Any:
        if not self._count_next:
            # Still returned, so that validate() sees DEALLOCATE ALL & co.
            return _UNCOUNTED
        key = super().maybe_add_to_cache(query, prep, name)
        if prep is Prepare.SHOULD:
            self.bytes += cost(self.key(query))
            # psycopg evicts only when a *new* key comes, letting the server
            # hold prepared_max + 1 statements meanwhile; evict right away.
            self._trim()
        return key

    def validate(self, key: Any, prep: Prepare, name: bytes, results: Any) -> None:
        if key is _UNCOUNTED:
            self._should_discard(prep, results)
            return
        invalidations = self.invalidations
        super().validate(key, prep, name, results)
        cleared = self.invalidations != invalidations
        if prep is Prepare.SHOULD and key not in self._names and not cleared:
            # Its first run failed: psycopg forgets it but leaves it on the
            # server (a new name is prepared next time); deallocate it.
            self._to_flush.append(name)
            self.bytes -= cost(key)

    def _should_discard(self, prep: Prepare, results: Sequence[Any], *_: Any) -> bool:
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

    def invalidate(self, deallocate_all: bool = False) -> bool:
        """Forget every statement (and DEALLOCATE ALL after the next command).

        psycopg sends DEALLOCATE ALL only if it knows of a statement;
        ``deallocate_all`` sends it anyway, for when the server's statements
        and psycopg's disagree (one missing, a name taken).
        """
        self.invalidations += 1
        logger.debug(
            "a connection forgets its %d prepared statement(s) (a schema "
            "change, DEALLOCATE ALL or clear_cache())",
            len(self._names),
        )
        self.bytes = 0
        self._trust_after_flush = _distrust
        cleared = super().clear()
        if deallocate_all and not cleared:
            self._to_flush.clear()
            self._to_flush.append(None)  # psycopg's DEALLOCATE ALL
            cleared = True
        self._trust = _FLUSHING if cleared else _distrust
        return cleared

    def maintain_gen(self, conn: Any) -> PQGen[None]:
        # psycopg runs this after each successful command and iterates it at
        # once: the pending DEALLOCATE ALL (if any) is sent now.
        if self._trust == _FLUSHING:
            self._trust = self._trust_after_flush
        return super().maintain_gen(conn)

    def _rotate(self) -> None:
        self._trim()
        super()._rotate()  # psycopg's: its execution counts (_counts)

    def _trim(self) -> None:
        """Evict least recently used statements down to both bounds."""
        names = self._names
        while len(names) > 1 and (
            len(names) > self.prepared_max or self.bytes > self.max_bytes
        ):
            key, name = names.popitem(last=False)
            self._to_flush.append(name)
            self.bytes -= cost(key)
            self.evictions += 1

    def snapshot(self) -> dict[str, int]:
        counters = {name: getattr(self, name) for name in CACHE_COUNTERS}
        return {**counters, "estimated_bytes": self.bytes}


def install(
    conn: AnyConnection,
    cache_size: int,
    cache_bytes: int,
    threshold: int,
    on_vanished: Callable[[], None] | None = None,
) -> None:
    """Give ``conn`` the Django-safe cache and literal-like number types."""
    set_prepare_manager(conn, StatementCache(cache_bytes, on_vanished))
    conn.prepare_threshold = threshold
    conn.prepared_max = cache_size
    literals.register(conn.adapters)


#: How many statements psycopg prepared are on the server now.
_SERVER_COUNT = "SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql"


def forget_if_lost(conn: psycopg.Connection[Any]) -> None:
    """Forget the statements of ``conn`` if the server lost some of them.

    For code the cache can't see into (a custom reset): psycopg notices a
    ``DISCARD ALL`` or ``DEALLOCATE ALL`` it runs, not one sent otherwise.
    Costs a round trip, only while the cache holds statements.
    """
    cache = cache_of(conn)
    if cache is None or not cache.statements:
        return
    with psycopg.Cursor(conn) as cursor:
        cursor.execute(_SERVER_COUNT, prepare=False)
        row = cursor.fetchone()
    if row is not None and row[0] < cache.statements:
        # psycopg forgets every statement on seeing the command; the rest
        # are deallocated at once, before anything is prepared again.
        run_own(conn, "DEALLOCATE ALL")


async def aforget_if_lost(conn: psycopg.AsyncConnection[Any]) -> None:
    """``forget_if_lost()`` on an async connection."""
    cache = cache_of(conn)
    if cache is None or not cache.statements:
        return
    async with psycopg.AsyncCursor(conn) as cursor:
        await cursor.execute(_SERVER_COUNT, prepare=False)
        row = await cursor.fetchone()
    if row is not None and row[0] < cache.statements:
        await arun_own(conn, "DEALLOCATE ALL")


def cache_of(conn: AnyConnection) -> StatementCache | None:
    cache = prepare_manager_of(conn)
    return cache if isinstance(cache, StatementCache) else None
