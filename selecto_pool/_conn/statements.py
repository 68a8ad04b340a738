"""The per-connection prepared-statement cache, made Django-safe.

psycopg already prepares statements (``prepare_threshold``) and keeps an LRU
of them per connection (``prepared_max``). Two things about it don't fit
Django, and this module changes exactly those:

* Integers are sent typed like SQL literals (int4, else int8, else numeric)
  and floats as numeric, not psycopg's smallest-fit int2, so that
  ``RawSQL("%s + %s", (30000, 30000))`` is 60000 as with literals.
* psycopg forgets every prepared statement on each ROLLBACK, which Django
  does all the time (tests, ``atomic`` failures); statements survive a
  rollback in PostgreSQL, so ``StatementCache`` keeps them.

Which statements are bound server-side at all is decided in ``execution``.
``StatementCache`` subclasses psycopg's private ``PrepareManager``, reached
through ``_compat``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.types.numeric import FloatDumper, IntBinaryDumper, IntDumper

from .._compat import Prepare, PrepareManager, prepare_manager_of, set_prepare_manager

COMMAND_OK = pq.ExecStatus.COMMAND_OK

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


class StatementCache(PrepareManager):
    """psycopg's per-connection LRU of prepared statements, made Django-safe.

    Counts hits, misses (statements prepared), evictions, invalidations and
    fallbacks, for ``pool_stats()``.
    """

    def __init__(self, on_vanished: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.hits = self.misses = self.evictions = self.invalidations = 0
        self.fallbacks = 0
        self._count_next = True
        #: Called when the server lost statements this cache prepared (the
        #: pool counts them; see SelectoPool.statements_vanished).
        self.on_vanished = on_vanished

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

    _int2_dumper = IntDumper._int4_dumper  # type: ignore[assignment]


class _LiteralIntBinaryDumper(IntBinaryDumper):
    _int2_dumper = IntBinaryDumper._int4_dumper  # type: ignore[assignment]


class _FloatAsNumericDumper(FloatDumper):
    """Floats typed as numeric, as a literal ``1.5`` is (quoting is unchanged)."""

    oid = psycopg.postgres.types["numeric"].oid


def install(
    conn: psycopg.Connection[Any],
    cache_size: int,
    threshold: int,
    on_vanished: Callable[[], None] | None = None,
) -> None:
    """Give ``conn`` the Django-safe cache and literal-like number types."""
    set_prepare_manager(conn, StatementCache(on_vanished))
    conn.prepare_threshold = threshold
    conn.prepared_max = cache_size
    conn.adapters.register_dumper(int, _LiteralIntDumper)
    conn.adapters.register_dumper(int, _LiteralIntBinaryDumper)
    conn.adapters.register_dumper(float, _FloatAsNumericDumper)


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
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql",
            prepare=False,
        )
        row = cursor.fetchone()
    if row is not None and row[0] < cache.statements:
        # psycopg forgets every statement on seeing the command; the rest
        # are deallocated at once, before anything is prepared again.
        conn.execute("DEALLOCATE ALL", prepare=False)


def cache_of(conn: psycopg.Connection[Any]) -> StatementCache | None:
    cache = prepare_manager_of(conn)
    return cache if isinstance(cache, StatementCache) else None
