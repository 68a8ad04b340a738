"""Is a pooled connection still alive? Asked before every checkout.

An idle connection has nothing to say: the server only writes to it when it
dies (a terminated backend, a restart, a crash: an error message and/or EOF)
or, rarely, for a notification. So a zero-timeout ``poll()`` on the socket
costs a system call, not a round trip, and tells the common case apart; only
a connection with unexpected input pays for a real ``SELECT`` -style probe.
Half-open TCP connections (a peer that vanished without a FIN) stay silent:
TCP keepalives, which the pool turns on, make the kernel report them.
"""

from __future__ import annotations

import select
import time
from typing import Any

import psycopg
from psycopg.pq import ConnStatus, TransactionStatus
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from .. import _compat
from .statements import AnyConnection


def _readable(fd: int) -> bool:
    """Input waiting on ``fd``, without blocking. poll(), unlike select(),
    takes descriptors above 1024 (a busy process has them)."""
    if not hasattr(select, "poll"):  # Windows
        return bool(select.select([fd], [], [], 0)[0])
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def glance(conn: AnyConnection) -> bool | None:
    """Alive (True) or dead (False) without a round trip; None when the
    connection has input waiting and only the server can tell."""
    pgconn = conn.pgconn
    if (
        conn.closed
        or pgconn.status != ConnStatus.OK
        or pgconn.transaction_status != TransactionStatus.IDLE
    ):
        return False
    try:
        return None if _readable(pgconn.socket) else True
    except (OSError, ValueError, psycopg.Error):
        return False


def is_alive(conn: psycopg.Connection[Any]) -> bool:
    """True when ``conn`` can be handed out; False when it must be replaced."""
    alive = glance(conn)
    if alive is not None:
        return alive
    try:
        ConnectionPool.check_connection(conn)
    except psycopg.Error:
        return False
    return True


async def ais_alive(conn: psycopg.AsyncConnection[Any]) -> bool:
    """``is_alive()`` for an async connection: the round trip, if any, awaited."""
    alive = glance(conn)
    if alive is not None:
        return alive
    try:
        await AsyncConnectionPool.check_connection(conn)
    except psycopg.Error:
        return False
    return True


def expired(conn: AnyConnection) -> bool:
    """Past ``max_lifetime``? psycopg_pool only asks when a connection returns."""
    return _compat.expires_at(conn) <= time.monotonic()
