"""Returning a connection to the state the next borrower expects.

A connection goes back into the pool idle (no transaction) and in
autocommit, without prepared statements when the pool's caches were cleared
meanwhile and, with the ``reset`` option, without the session state the last
borrower left (settings, role, locks, ``LISTEN``, cursors, temporary
tables), Django's own session settings applied again. A connection that
can't be brought there, or not within the time bound, is closed:
psycopg_pool discards it and opens a replacement. No return waits on the
server or the network longer than that bound.
"""

from __future__ import annotations

import inspect
import logging
import operator
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg.pq import PipelineStatus, TransactionStatus

from . import statements
from .own_statements import run_own
from .watchdog import Watchdog

logger = logging.getLogger("selecto_pool.pool")

Connection = psycopg.Connection[Any]
IDLE = TransactionStatus.IDLE
IN_TRANSACTION = (TransactionStatus.INTRANS, TransactionStatus.INERROR)

# Everything DISCARD ALL does but DEALLOCATE ALL and DISCARD PLANS, so that
# prepared statements and their plans survive. RESET ALL leaves a SET ROLE
# in place: SET SESSION AUTHORIZATION DEFAULT resets it. One round trip (the
# statements run as one implicit transaction).
SESSION_RESET = (
    "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; "
    "SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES"
)


def reset_session(conn: Connection) -> None:
    """The ``"session"`` reset: session state cleared, statements kept."""
    run_own(conn, SESSION_RESET)


def discard_all(conn: Connection) -> None:
    """The ``"discard"`` reset: ``DISCARD ALL``, prepared statements included.

    psycopg sees the command and forgets the statements (see
    ``StatementCache._should_discard``).
    """
    run_own(conn, "DISCARD ALL")


#: The implementations of the option's RESET_NAMES.
NAMED_RESETS: dict[str, Callable[[Connection], object]] = {
    "session": reset_session,
    "discard": discard_all,
}


#: What a borrower can set on the psycopg connection object itself.
#: Unpooled, it dies with the connection at the end of the request; pooled,
#: it would reach the next borrower (the ORM getting dict rows, or read-only
#: transactions), so a return restores it. (An attrgetter: checked at every
#: return, it costs 0.2 us.)
CLIENT_STATE = (
    "row_factory",
    "cursor_factory",
    "isolation_level",
    "read_only",
    "deferrable",
)
client_state: Callable[[Connection], tuple[Any, ...]] = operator.attrgetter(
    *CLIENT_STATE
)


class Unclean(Exception):
    """The connection can't be brought back to a clean idle state."""


class CleanerBase:
    """What the sync and async cleaners share, without I/O: the reset chosen,
    the named cursors to close, the client state a connection starts with.

    ``reconfigure`` is what the pool runs on a new connection (Django's
    session setup: time zone, role), run again after a reset undid it.
    """

    def __init__(
        self,
        pool_name: str,
        *,
        reset: str | Callable[[Any], object] | None,
        reconfigure: Callable[[Any], object] | None,
        named: Mapping[str, Callable[[Any], object]],
    ):
        self.pool_name = pool_name
        self._reset = named[reset] if isinstance(reset, str) else reset
        # A custom reset may drop prepared statements behind psycopg's back.
        self._custom = reset is not None and not isinstance(reset, str)
        self._reconfigure = reconfigure
        # Named cursors of checked-out connections (see track_cursor).
        self._cursors: weakref.WeakKeyDictionary[Any, weakref.WeakSet[Any]]
        self._cursors = weakref.WeakKeyDictionary()
        self._cursors_lock = threading.Lock()
        # client_state() of a connection as the pool configured it.
        self._client_defaults: tuple[Any, ...] | None = None

    @property
    def resets(self) -> bool:
        return self._reset is not None

    def configured(self, conn: Any) -> None:
        """Remember ``conn``'s client state, as every new connection has it."""
        if self._client_defaults is None:
            self._client_defaults = client_state(conn)

    def changed_client_state(self, conn: Any) -> list[tuple[str, Any]]:
        """(attribute, default) of what the borrower changed on ``conn``."""
        defaults = self._client_defaults
        if defaults is None or client_state(conn) == defaults:
            return []
        now = client_state(conn)
        return [
            (name, value)
            for name, value, current in zip(CLIENT_STATE, defaults, now, strict=True)
            if current != value
        ]

    def track_cursor(self, conn: Any, cursor: Any) -> None:
        """Close the named ``cursor`` on return if it is still open.

        A cursor declared WITH HOLD (Django's ``.iterator()`` outside a
        transaction) outlives the transaction: unpooled, it dies with the
        connection; pooled, it would be handed on with it, its rows held on
        the server and its name taken. Closed through psycopg, so that a
        late ``close()`` by its owner doesn't reach the next borrower.
        """
        with self._cursors_lock:
            self._cursors.setdefault(conn, weakref.WeakSet()).add(cursor)

    def open_cursors(self, conn: Any) -> list[Any]:
        """The tracked cursors of ``conn`` still open (no longer tracked)."""
        if not self._cursors:
            return []  # the common case, without the lock
        with self._cursors_lock:
            cursors = self._cursors.pop(conn, None)
        return [cursor for cursor in cursors or () if not cursor.closed]

    def _say_discarded(self, why: str, level: int) -> None:
        """Log why a returned connection is closed (the caller closes it)."""
        logger.log(
            level, "closing a connection returned to %r: %s", self.pool_name, why
        )


class Cleaner(CleanerBase):
    """Cleans the connections returned to one sync pool, within ``timeout`` s."""

    def __init__(
        self,
        pool_name: str,
        *,
        reset: str | Callable[[Connection], object] | None,
        reconfigure: Callable[[Connection], object] | None,
        timeout: float,
    ):
        super().__init__(
            pool_name, reset=reset, reconfigure=reconfigure, named=NAMED_RESETS
        )
        self._watchdog = Watchdog(pool_name, timeout)

    def restore_client_state(self, conn: Connection) -> None:
        """Undo what the borrower set on the psycopg object (no I/O); ``conn``
        must be out of a transaction, as ``isolation_level`` & co. require."""
        for name, value in self.changed_client_state(conn):
            setattr(conn, name, value)

    def clean(
        self,
        conn: Connection,
        *,
        deallocate: bool,
        reset: bool,
        cursors: Sequence[psycopg.ServerCursor[Any]] = (),
    ) -> bool:
        """Roll back, autocommit, close ``cursors``, reset and deallocate as
        asked; False if ``conn`` was closed instead."""
        if conn.closed:
            return False
        if (why_not := unrecoverable(conn)) is not None:
            self._discard(conn, *why_not)
            return False
        guard = None
        too_long = f"cleaning it took longer than {self._watchdog.seconds} s"
        try:
            with self._watchdog.guard(conn) as guard:
                self._clean(conn, deallocate, reset, cursors)
        except psycopg.Error as exc:
            if guard is not None and guard.fired:
                why = too_long
            else:
                why = f"it could not be reset: {type(exc).__name__}"
            self._discard(conn, why, logging.WARNING)
            return False
        except Unclean as exc:
            self._discard(conn, str(exc), logging.WARNING)
            return False
        except Exception:
            # A bug in a custom reset: the session is in an unknown state.
            logger.exception(
                "cleaning a connection returned to %r failed", self.pool_name
            )
            self._discard(conn, "its cleaning raised", logging.DEBUG)
            return False
        if guard is not None and guard.fired:
            # Cut just as the cleaning ended: the socket is shut down.
            self._discard(conn, too_long, logging.WARNING)
            return False
        return True

    def _clean(
        self,
        conn: Connection,
        deallocate: bool,
        reset: bool,
        cursors: Sequence[psycopg.ServerCursor[Any]],
    ) -> None:
        if conn.pgconn.transaction_status in IN_TRANSACTION:
            conn.rollback()
        if not conn.autocommit:
            conn.autocommit = True
        self.restore_client_state(conn)  # out of a transaction by now
        for cursor in cursors:
            # Sends CLOSE for a cursor WITH HOLD (the rollback closed the
            # others), and marks it closed for its owner.
            cursor.close()
        if reset and self._reset is not None:
            self._run_reset(conn, self._reset)
        if deallocate:
            run_own(conn, "DEALLOCATE ALL")

    def _run_reset(
        self, conn: Connection, reset: Callable[[Connection], object]
    ) -> None:
        result = reset(conn)
        if inspect.isgenerator(result) or inspect.isawaitable(result):
            # A generator or async function: calling it ran none of its code.
            kind = "generator" if inspect.isgenerator(result) else "coroutine"
            raise did_nothing(reset, result, kind, "a plain function")
        if (status := conn.pgconn.transaction_status) != IDLE:
            raise Unclean(
                f"its reset left it {TransactionStatus(status).name}, not IDLE"
            )
        if not conn.autocommit:
            conn.autocommit = True
        if self._custom:
            statements.forget_if_lost(conn)
        else:
            # Received for the last borrower's LISTEN before the UNLISTEN, and
            # kept by psycopg until someone asks: not for the next borrower.
            for _ in conn.notifies(timeout=0):
                pass
        if self._reconfigure is not None:
            # As when the connection was opened: Django's session setup runs
            # rarely, nothing of it is worth preparing.
            threshold, conn.prepare_threshold = conn.prepare_threshold, None
            try:
                self._reconfigure(conn)
            finally:
                conn.prepare_threshold = threshold

    def _discard(self, conn: Connection, why: str, level: int) -> None:
        self._say_discarded(why, level)
        conn.close()


def did_nothing(reset: object, result: Any, kind: str, expected: str) -> TypeError:
    """The error for a reset that returned ``result``, of which none ran."""
    close = getattr(result, "close", None)
    if close is not None:
        close()  # no "never awaited" warning on top of this error
    return TypeError(
        f"the reset {reset!r} returned a {kind}, and so did nothing: it must "
        f"be {expected} taking the connection"
    )


def unrecoverable(conn: Any) -> tuple[str, int] | None:
    """Why ``conn`` must be closed without trying to clean it (and how loudly).

    A rollback would wait for the end of whatever is in progress: a COPY or
    a ``stream()`` not read to the end may never end.
    """
    status = conn.pgconn.transaction_status
    if status == TransactionStatus.ACTIVE:
        return (
            "it is still running a command (a COPY or stream() not read to the end?)",
            logging.WARNING,
        )
    if status == TransactionStatus.UNKNOWN:
        return "its connection to the server is broken", logging.INFO
    if conn.pgconn.pipeline_status != PipelineStatus.OFF:
        return "its pipeline is still open", logging.WARNING
    return None
