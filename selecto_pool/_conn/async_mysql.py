"""One MySQL connection for asyncio code: an aiomysql-style proxy over mysqlclient.

mysqlclient has no asyncio interface, but it releases the GIL while it waits
for the network; so each call runs in a worker thread of the pool (as
Django's async ORM runs its sync code) and the event loop awaits it:

    async with conn.cursor() as cur:
        await cur.execute("SELECT %s", [1])
        rows = await cur.fetchall()
    await conn.commit()

A connection runs one call at a time (a lock, as a mysqlclient connection
is not safe for two threads at once). A task cancelled while its call runs
leaves the thread running: the connection is then *interrupted*, refuses any
further call, and its pool stops the query (``KILL QUERY``) before taking
it back. Once given back (``retire()``) it refuses every call: its session
may be another task's by then. ``raw`` is the mysqlclient connection, for
sync code handed to ``run_sync()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from ..errors import ConnectionInterrupted, ConnectionReturned

T = TypeVar("T")


class Runner(Protocol):
    """What a connection needs from its pool (passed down, never imported)."""

    def submit(
        self, fn: Callable[..., T], /, *args: Any
    ) -> concurrent.futures.Future[T]: ...

    def interrupted(
        self, conn: AsyncMySQLConnection, running: concurrent.futures.Future[Any]
    ) -> concurrent.futures.Future[None]: ...


class AsyncMySQLConnection:
    """A checked-out mysqlclient connection whose blocking calls are awaited."""

    def __init__(self, raw: Any, runner: Runner):
        self._raw = raw
        self._runner = runner
        self._lock = asyncio.Lock()
        #: The server's id of the session, read now: KILL QUERY needs it
        #: while another thread is inside mysqlclient.
        self.thread_id: int = raw.thread_id()
        #: Set when a cancelled task left a call running: done once the
        #: pool has stopped that call (see ``Runner.interrupted``).
        self.interruption: concurrent.futures.Future[None] | None = None
        #: Set when given back to the pool: every later call is refused.
        self.returned = False

    @property
    def raw(self) -> Any:
        """The mysqlclient (``MySQLdb``) connection, for ``run_sync()``."""
        return self._raw

    @property
    def busy(self) -> bool:
        """A call runs (or waits to) on this connection."""
        return self._lock.locked()

    def cursor(self, cursorclass: type[Any] | None = None) -> AsyncMySQLCursor:
        """A cursor (``async with conn.cursor() as cur``); no I/O until used."""
        return AsyncMySQLCursor(self, cursorclass)

    async def begin(self) -> None:
        await self.run_sync(lambda raw: raw.begin())

    async def commit(self) -> None:
        await self.run_sync(lambda raw: raw.commit())

    async def rollback(self) -> None:
        await self.run_sync(lambda raw: raw.rollback())

    async def run_sync(self, fn: Callable[[Any], T]) -> T:
        """``fn(raw)`` in a worker thread of the pool, as every call here is."""
        return await self.call(fn, self._raw)

    async def retire(self) -> None:
        """Refuse every call from now on, and return once the call running
        (a task's left behind, say) has ended: a mysqlclient connection must
        not be reset, closed or handed out under a thread that uses it."""
        self.returned = True
        async with self._lock:
            pass  # calls queued before this one are refused in turn

    async def call(self, fn: Callable[..., T], /, *args: Any) -> T:
        """Run ``fn(*args)`` in a worker thread, one call at a time."""
        async with self._lock:
            if self.returned:
                raise ConnectionReturned(
                    "this connection was given back to its pool (acheckin, or "
                    "the end of its block): take another"
                )
            if self.interruption is not None:
                raise ConnectionInterrupted(
                    "this connection's query was cancelled while it ran: the "
                    "pool stops it; give the connection back (acheckin) and "
                    "take another"
                )
            running = self._runner.submit(fn, *args)
            try:
                return await asyncio.wrap_future(running)
            except asyncio.CancelledError:
                # Not started: cancelled with the task. Running: the thread
                # can't be interrupted, the query on the server can.
                if not running.cancel() and not running.done():
                    self.interruption = self._runner.interrupted(self, running)
                raise


class AsyncMySQLCursor:
    """A mysqlclient cursor whose calls are awaited (aiomysql's names)."""

    def __init__(self, conn: AsyncMySQLConnection, cursorclass: type[Any] | None):
        self._conn = conn
        self._cursor: Any = (
            conn.raw.cursor() if cursorclass is None else conn.raw.cursor(cursorclass)
        )

    @property
    def connection(self) -> AsyncMySQLConnection:
        return self._conn

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    @property
    def lastrowid(self) -> Any:
        return self._cursor.lastrowid

    async def execute(self, sql: str, params: Any = None) -> int:
        """Run ``sql`` (``%s`` / ``%(name)s`` placeholders); the row count."""
        return int(await self._conn.call(self._cursor.execute, sql, params))

    async def executemany(self, sql: str, params: Sequence[Any]) -> int:
        return int(await self._conn.call(self._cursor.executemany, sql, params) or 0)

    async def fetchone(self) -> Any:
        return await self._conn.call(self._cursor.fetchone)

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        fetch = self._cursor.fetchmany
        rows: Sequence[Any] = await (
            self._conn.call(fetch) if size is None else self._conn.call(fetch, size)
        )
        return rows

    async def fetchall(self) -> Sequence[Any]:
        rows: Sequence[Any] = await self._conn.call(self._cursor.fetchall)
        return rows

    async def close(self) -> None:
        # Given back or interrupted, the connection is the pool's: nothing to
        # do (a mysqlclient cursor's close reads what is left unread).
        if self._conn.interruption is None and not self._conn.returned:
            await self._conn.call(self._cursor.close)

    async def __aenter__(self) -> AsyncMySQLCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
