"""Returning a connection to an async pool: ``reset``'s cleaning, awaited.

What a connection must look like when it goes back into the pool, what each
``reset`` clears, and which connections are closed rather than cleaned are
said in ``reset``; this reaches the same state with awaited I/O. The same
watchdog bounds it: past ``connection_timeout`` it shuts the socket down, so
that the awaited read fails at once (a cancelled read would make psycopg try
to cancel the query on the server, a new connection over the same stalled
network). A connection that can't be cleaned in time, or whose cleaning is
interrupted (a cancelled task), is closed: psycopg_pool discards it and opens
a replacement.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from . import statements
from .own_statements import arun_own
from .reset import (
    IDLE,
    IN_TRANSACTION,
    SESSION_RESET,
    CleanerBase,
    Unclean,
    did_nothing,
    unrecoverable,
)
from .watchdog import Watchdog

logger = logging.getLogger("selecto_pool.pool")

AsyncConnection = psycopg.AsyncConnection[Any]


async def reset_session(conn: AsyncConnection) -> None:
    """The ``"session"`` reset (see ``reset.reset_session``)."""
    await arun_own(conn, SESSION_RESET)


async def discard_all(conn: AsyncConnection) -> None:
    """The ``"discard"`` reset (see ``reset.discard_all``)."""
    await arun_own(conn, "DISCARD ALL")


#: The implementations of the option's RESET_NAMES, awaited.
NAMED_RESETS: dict[str, Callable[[AsyncConnection], Awaitable[None]]] = {
    "session": reset_session,
    "discard": discard_all,
}


class AsyncCleaner(CleanerBase):
    """Cleans the connections returned to one async pool, within ``timeout`` s.

    A custom ``reset`` is psycopg_pool's async one: a function taking the
    connection and returning an awaitable (an ``async def``).
    """

    def __init__(
        self,
        pool_name: str,
        *,
        reset: str | Callable[[AsyncConnection], object] | None,
        timeout: float,
    ):
        super().__init__(pool_name, reset=reset, reconfigure=None, named=NAMED_RESETS)
        self._watchdog = Watchdog(pool_name, timeout)

    async def restore_client_state(self, conn: AsyncConnection) -> None:
        """Undo what the borrower set on the psycopg object; no I/O out of a
        transaction, where ``conn`` must be."""
        for name, value in self.changed_client_state(conn):
            if name in ("row_factory", "cursor_factory"):
                setattr(conn, name, value)
            else:  # isolation_level... have setters of their own
                await getattr(conn, f"set_{name}")(value)

    async def clean(
        self,
        conn: AsyncConnection,
        *,
        deallocate: bool,
        reset: bool,
        cursors: Sequence[psycopg.AsyncServerCursor[Any]] = (),
    ) -> bool:
        """Roll back, autocommit, close ``cursors``, reset and deallocate as
        asked; False if ``conn`` was closed instead."""
        if conn.closed:
            return False
        if (why_not := unrecoverable(conn)) is not None:
            await self._discard(conn, *why_not)
            return False
        guard = None
        too_long = f"cleaning it took longer than {self._watchdog.seconds} s"
        try:
            with self._watchdog.guard(conn) as guard:
                await self._clean(conn, deallocate, reset, cursors)
        except psycopg.Error as exc:
            if guard is not None and guard.fired:
                why = too_long
            else:
                why = f"it could not be reset: {type(exc).__name__}"
            await self._discard(conn, why, logging.WARNING)
            return False
        except Unclean as exc:
            await self._discard(conn, str(exc), logging.WARNING)
            return False
        except Exception:
            # A bug in a custom reset: the session is in an unknown state.
            logger.exception(
                "cleaning a connection returned to %r failed", self.pool_name
            )
            await self._discard(conn, "its cleaning raised", logging.DEBUG)
            return False
        except BaseException:
            # Cancelled halfway: the session's state is unknown.
            await conn.close()
            raise
        if guard is not None and guard.fired:
            # Cut just as the cleaning ended: the socket is shut down.
            await self._discard(conn, too_long, logging.WARNING)
            return False
        return True

    async def _clean(
        self,
        conn: AsyncConnection,
        deallocate: bool,
        reset: bool,
        cursors: Sequence[psycopg.AsyncServerCursor[Any]],
    ) -> None:
        if conn.pgconn.transaction_status in IN_TRANSACTION:
            await conn.rollback()
        if not conn.autocommit:
            await conn.set_autocommit(True)
        await self.restore_client_state(conn)  # out of a transaction by now
        for cursor in cursors:
            await cursor.close()
        if reset and self._reset is not None:
            await self._run_reset(conn, self._reset)
        if deallocate:
            await arun_own(conn, "DEALLOCATE ALL")

    async def _run_reset(
        self, conn: AsyncConnection, reset: Callable[[AsyncConnection], object]
    ) -> None:
        result = reset(conn)
        if inspect.isgenerator(result) or inspect.isasyncgen(result):
            raise did_nothing(reset, result, "generator", "an async function")
        if inspect.isawaitable(result):
            await result
        if (status := conn.pgconn.transaction_status) != IDLE:
            raise Unclean(
                f"its reset left it {TransactionStatus(status).name}, not IDLE"
            )
        if not conn.autocommit:
            await conn.set_autocommit(True)
        if self._custom:
            await statements.aforget_if_lost(conn)
        else:
            # Received for the last borrower's LISTEN before the UNLISTEN:
            # not for the next borrower (see reset.Cleaner._run_reset).
            async for _ in conn.notifies(timeout=0):
                pass

    async def _discard(self, conn: AsyncConnection, why: str, level: int) -> None:
        self._say_discarded(why, level)
        await conn.close()
