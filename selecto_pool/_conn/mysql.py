"""One MySQL or MariaDB connection (mysqlclient's ``MySQLdb``): what a pool needs.

* **Liveness without a round trip.** MySQL sends nothing on an idle
  connection unless it ends it (``wait_timeout``, ``KILL``, a shutdown: an
  error packet and/or EOF), and has no notifications. So input waiting on the
  socket of an idle connection means it is dead: a zero-timeout ``poll()`` of
  mysqlclient's ``fileno()`` tells, at the cost of a system call.
* **TCP keepalives**, which mysqlclient has no option for, are set on the
  socket itself, so that a peer that vanished without a FIN shows as dead
  (readable) within about a minute instead of hours.
* **Reset on return**: rolled back when a transaction is open (known without
  a round trip, see ``mysql_status``), autocommit restored; closed if a
  result was left unread (it would make every later query fail).
* **Fork safety.** mysqlclient has no fork check: a connection object freed
  in a forked child says goodbye (``COM_QUIT``) on the socket it shares with
  the parent, and the server ends the parent's session. ``detach()`` points
  the child's copy of each descriptor at ``/dev/null`` instead.

MySQLdb is imported when the first connection opens, never at import: a
PostgreSQL-only project doesn't need mysqlclient installed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from ..errors import ProbeTimeout
from . import mysql_status
from .liveness import _readable as readable
from .redaction import redact

logger = logging.getLogger("selecto_pool.pool")

# The same keepalive timing as PostgreSQL connections (libpq's parameters).
KEEPALIVE_IDLE = 30
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 3


def _keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; macOS has TCP_KEEPALIVE
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)


def open_connection(kwargs: Mapping[str, Any]) -> Any:
    """``MySQLdb.connect(**kwargs)``; its error without the password.

    The client library echoes the host it could not resolve, and a ``HOST``
    written with the password in it (``"pw@db"``) would show it in every
    log line and exception built from the error.
    """
    import MySQLdb

    try:
        return MySQLdb.connect(**kwargs)
    except MySQLdb.Error as exc:
        raise _without_password(exc, kwargs) from None


def _without_password(exc: Exception, kwargs: Mapping[str, Any]) -> Exception:
    secret = kwargs.get("password", kwargs.get("passwd"))
    if not secret:
        return exc
    values = [
        str(value)
        for key, value in kwargs.items()
        if key not in ("password", "passwd") and isinstance(value, str | int)
    ]
    args = tuple(
        redact(arg, str(secret), values) if isinstance(arg, str) else arg
        for arg in exc.args
    )
    return exc if args == exc.args else type(exc)(*args)


class MySQLDriver:
    """Opens, tests, resets and closes the MySQLdb connections of one pool."""

    def __init__(
        self,
        pool_name: str,
        kwargs: Mapping[str, Any],
        configure: Callable[[Any], object] | None = None,
    ):
        self._pool_name = pool_name
        self._kwargs = {**kwargs, "autocommit": True}
        self._configure = configure
        # The socket of each open connection, as (descriptor, inode): see
        # detach(). Written by the opening threads, read after fork().
        self._sockets: dict[int, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def connect(self) -> Any:
        conn: Any = open_connection(self._kwargs)
        try:
            fd = conn.fileno()
            with socket.socket(fileno=os.dup(fd)) as sock:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    _keepalive(sock)
            with self._lock:
                self._sockets[id(conn)] = (fd, os.fstat(fd).st_ino)
            if self._configure is not None:
                self._configure(conn)
        except BaseException:
            self.close(conn)
            raise
        return conn

    def is_alive(self, conn: Any) -> bool:
        if not conn.open:
            return False
        try:
            return not readable(conn.fileno())
        except Exception:  # closed meanwhile: mysqlclient's errors, OSError
            return False

    def reset(self, conn: Any) -> Literal["clean", "rolled back", "broken"]:
        """Roll back an open transaction, restore autocommit; close if that fails.

        Returns "clean", "rolled back" or "broken" (and closed).
        """
        import MySQLdb

        if not conn.open:
            self.close(conn)
            return "broken"
        try:
            # A result left unread (an unbuffered cursor given back mid-rows,
            # more results of a multi-statement query): nothing else can run
            # on the connection until it is read. Asked without a round trip:
            # the client library refuses (CR_COMMANDS_OUT_OF_SYNC) or says -1.
            if conn.next_result() != -1:
                raise MySQLdb.ProgrammingError("a result was left unread")
            autocommit = conn.get_autocommit()
            in_transaction = mysql_status.in_transaction(conn)
            if autocommit and in_transaction is False:
                return "clean"  # the common case: nothing to send
            if in_transaction is not False:
                # Open, or unknown (a client library other than MariaDB's):
                # rolled back, as closing the connection would have.
                conn.rollback()
            if not autocommit:
                conn.autocommit(True)
        except MySQLdb.Error as exc:
            logger.warning(
                "discarding a connection of %r that could not be reset: %s",
                self._pool_name,
                type(exc).__name__,
            )
            self.close(conn)
            return "broken"
        return "rolled back" if in_transaction else "clean"

    def ping(self, conn: Any) -> None:
        """A round trip (``CONN_HEALTH_CHECKS``); raises if it fails."""
        conn.ping()

    def kill_query(self, thread_id: int, timeout: float) -> None:
        """``KILL QUERY`` the session ``thread_id`` from a connection of its
        own (the busy one can't be used); raises mysqlclient's error if that
        fails, within about ``timeout`` s."""
        wait = max(int(timeout), 1)  # mysqlclient takes whole seconds
        killer: Any = open_connection(
            {
                **self._kwargs,
                "connect_timeout": wait,
                "read_timeout": wait,
                "write_timeout": wait,
            }
        )
        try:
            killer.query(f"KILL QUERY {int(thread_id)}")
        finally:
            killer.close()

    def sever(self, conn: Any) -> None:
        """Shut the socket of ``conn`` down, so that a thread blocked on it
        returns (with an error); closing it under that thread would free
        what it uses. The connection is then dead (``is_alive()``). The
        descriptor is the one recorded at connect: mysqlclient refuses any
        call, ``fileno()`` included, while another thread uses the connection.
        """
        with self._lock:
            known = self._sockets.get(id(conn))
        if known is None:
            return
        fd, inode = known
        with (
            contextlib.suppress(OSError),
            socket.socket(fileno=os.dup(fd)) as sock,
        ):
            if os.fstat(sock.fileno()).st_ino == inode:  # still that socket
                sock.shutdown(socket.SHUT_RDWR)

    def close(self, conn: Any) -> None:
        with self._lock:
            self._sockets.pop(id(conn), None)
        with contextlib.suppress(Exception):
            conn.close()

    def detach(self) -> int:
        """In a forked child: point every inherited socket at ``/dev/null``.

        The parent keeps its connections; the child's copies of the objects
        can then be freed (or used, and fail) without touching them. Only
        descriptors that still hold the very socket opened (same inode) are
        replaced. Returns how many were. Called with one thread alive, so no
        lock is taken (another thread may have held it at fork time).
        """
        detached = 0
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            for fd, inode in list(self._sockets.values()):
                try:
                    if os.fstat(fd).st_ino != inode:
                        continue
                    os.dup2(devnull, fd)
                    detached += 1
                except OSError:
                    continue
        finally:
            os.close(devnull)
        self._sockets.clear()
        self._lock = threading.Lock()
        return detached


def select_one(conn: Any, deadline: float) -> None:
    """``SELECT 1`` on ``conn``; ``ProbeTimeout`` if unanswered at ``deadline``.

    mysqlclient's queries block without a client-side timeout (its
    ``read_timeout`` is fixed at connect time); its ``send_query()`` and
    ``read_query_result()`` split the round trip, so the wait for the answer
    can be a ``poll()`` on the socket with the deadline.
    """
    conn.send_query(b"SELECT 1")
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not poller.poll(remaining * 1000.0):
        raise ProbeTimeout("no answer to the health probe's SELECT 1 in time")
    conn.read_query_result()
    result = conn.store_result()
    if result is not None:
        result.fetch_row(0)
