"""The probe behind ``/health/db``: bounded in time, one at a time, never in the way.

Load balancers may call ``/health/db`` many times a second, and the network
may stall. So:

* one probe at a time per process and alias: requests that arrive while it
  runs wait for it and share its result (single flight);
* it takes a connection only if one is idle now (``getconn_if_idle()``), so
  it never queues ahead of the application nor grows the pool. If none is
  idle it looks again until the deadline; if the application kept checking
  connections out meanwhile, the database is serving it, and the pool's
  counters say so;
* its ``SELECT 1`` has a deadline. Neither psycopg nor mysqlclient has a
  client-side timeout for a query, and on a stalled network neither
  ``statement_timeout`` (the server never sees the query) nor a cancel
  request (stalled too) helps; so the query is sent and its answer awaited
  on the socket with the deadline (libpq's non-blocking calls; mysqlclient's
  ``send_query()``, see ``_conn.mysql``), and when the deadline passes the
  connection, whose reply may still be on its way, is closed and the pool
  replaces it.

It works on any pool of ``_pool.abc.Pool``: PostgreSQL's and MySQL's.
"""

from __future__ import annotations

import logging
import selectors
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from django.db import DatabaseError
from psycopg import pq

from .._api import get_pool
from .._config.health import HealthSettings
from .._conn import mysql
from .._pool.abc import Pool
from .._pool.stats import PoolStats
from .._process import registry
from ..errors import ProbeTimeout

logger = logging.getLogger("selecto_pool.health")

#: The least time the SELECT 1 gets, even when an idle connection turned up
#: just before the deadline; so answers come within probe_timeout + MARGIN.
MARGIN = 0.1
# How often to look for an idle connection while every one is busy.
_IDLE_POLL = 0.005
# How long after the deadline those who share a probe wait for its leader,
# which may still be giving its connection back.
_FOLLOWER_SLACK = 2 * MARGIN


@dataclass(frozen=True)
class ProbeResult:
    status: str  # "ok", "saturated" or "unavailable"
    #: The SELECT 1's round trip, None when no probe ran.
    probe_ms: float | None = None
    #: An exception class name, never a message.
    error: str | None = None


class _Flight:
    def __init__(self, deadline: float):
        self.deadline = deadline
        self.done = threading.Event()
        self.result: ProbeResult | None = None


_lock = threading.Lock()
_flights: dict[str, _Flight] = {}
# The last status each alias's probe gave, to log changes rather than each
# answer (a load balancer may ask many times a second).
_last_status: dict[str, str] = {}


def probe_alias(alias: str, config: HealthSettings) -> ProbeResult:
    """``probe()`` of the alias's pool, logged; unavailable if it has none."""
    try:
        pool = get_pool(alias)
    except DatabaseError as exc:
        return _logged(alias, ProbeResult("unavailable", error=type(exc).__name__))
    return probe(alias, pool, config)


def probe(alias: str, pool: Pool, config: HealthSettings) -> ProbeResult:
    """This process's answer for ``alias``, within probe_timeout + MARGIN."""
    if _saturated(pool.stats(), config):
        # Don't add to the queue of clients the pool can't serve already.
        return _logged(alias, ProbeResult("saturated"))
    registry.on_fork_in_child(_forget_flights)
    now = time.monotonic()
    with _lock:
        current = _flights.get(alias)
        # A flight past its deadline lost its leader (a fork took it away).
        if current is not None and now <= current.deadline + _FOLLOWER_SLACK:
            flight, leading = current, False
        else:
            flight, leading = _Flight(now + config.probe_timeout), True
            _flights[alias] = flight
    if not leading:
        flight.done.wait(max(flight.deadline + _FOLLOWER_SLACK - now, 0.0))
        return flight.result or ProbeResult("unavailable", error="ProbeTimeout")
    try:
        flight.result = _probe_once(pool, flight.deadline)
    except DatabaseError as exc:  # PoolClosed: the pool is stopping
        flight.result = ProbeResult("unavailable", error=type(exc).__name__)
    finally:
        with _lock:
            if _flights.get(alias) is flight:
                del _flights[alias]
        flight.done.set()
    return _logged(alias, flight.result)


def _logged(alias: str, result: ProbeResult) -> ProbeResult:
    """Log a change of status: WARNING when it stops being ok, INFO when it
    is ok again; other failed probes at DEBUG."""
    with _lock:
        before = _last_status.get(alias, "ok")
        _last_status[alias] = result.status
    if result.status != "ok":
        log = logger.warning if before == "ok" else logger.debug
        log(
            "health probe of %r: %s (%s)",
            alias,
            result.status,
            result.error or "every connection busy",
        )
    elif before != "ok":
        logger.info("health probe of %r: ok again (was %s)", alias, before)
    return result


def _saturated(stats: PoolStats, config: HealthSettings) -> bool:
    all_busy = stats.in_use >= stats.pool_size + stats.max_overflow
    return stats.waiting >= config.max_waiting or (
        all_busy and stats.checkout_wait_p99_ms > config.max_wait_ms
    )


def _probe_once(pool: Pool, deadline: float) -> ProbeResult:
    started = time.monotonic()
    checkouts = pool.stats().checkouts
    while (conn := pool.getconn_if_idle()) is None:
        if time.monotonic() >= deadline:
            return _from_counters(pool.stats(), checkouts)
        time.sleep(_IDLE_POLL)
    answer_by = max(deadline, time.monotonic() + MARGIN)
    try:
        if isinstance(conn, psycopg.Connection):
            select_one(conn, answer_by)
        else:
            mysql.select_one(conn, answer_by)
    except ProbeTimeout:
        conn.close()  # a reply may still come: the pool replaces it
        return ProbeResult("unavailable", error="ProbeTimeout")
    except _driver_errors() as exc:
        return ProbeResult("unavailable", error=type(exc).__name__)
    finally:
        # SELECT 1 left nothing for the reset option to undo: not its cost.
        pool.putconn(conn, reset=False)
    return ProbeResult("ok", round((time.monotonic() - started) * 1000.0, 3))


def _from_counters(stats: PoolStats, checkouts_before: int) -> ProbeResult:
    """No connection was idle until the deadline: what the pool's counters say."""
    if stats.checkouts > checkouts_before:
        return ProbeResult("ok")  # the application is being served
    if stats.in_use == 0:
        # Nothing idle, nothing in use: every connection is missing or still
        # being opened (the server is down or unreachable).
        return ProbeResult("unavailable", error="ProbeTimeout")
    return ProbeResult("saturated")


def _driver_errors() -> tuple[type[BaseException], ...]:
    """psycopg's errors, and mysqlclient's where it is imported (a MySQL pool
    exists only then)."""
    mysqldb = sys.modules.get("MySQLdb")
    return (psycopg.Error, *((mysqldb.Error,) if mysqldb is not None else ()))


def select_one(conn: psycopg.Connection[Any], deadline: float) -> None:
    """``SELECT 1`` on ``conn``; ``ProbeTimeout`` if unanswered at ``deadline``."""
    pgconn = conn.pgconn
    pgconn.send_query(b"SELECT 1")
    with selectors.DefaultSelector() as selector:
        both = selectors.EVENT_READ | selectors.EVENT_WRITE
        selector.register(pgconn.socket, both)
        while pgconn.flush():  # psycopg's connections are non-blocking
            if _wait(selector, deadline) & selectors.EVENT_READ:
                pgconn.consume_input()
        selector.modify(pgconn.socket, selectors.EVENT_READ)
        results = []
        while True:
            while pgconn.is_busy():
                _wait(selector, deadline)
                pgconn.consume_input()
            if (result := pgconn.get_result()) is None:
                break
            results.append(result)
    if [result.status for result in results] != [pq.ExecStatus.TUPLES_OK]:
        raise _error_of(results)


def _error_of(results: list[pq.abc.PGresult]) -> psycopg.Error:
    """The psycopg error class of the server's answer (its SQLSTATE)."""
    for result in results:
        if sqlstate := result.error_field(pq.DiagnosticField.SQLSTATE):
            try:
                return psycopg.errors.lookup(sqlstate.decode())("SELECT 1 failed")
            except KeyError:
                break
    return psycopg.OperationalError("SELECT 1 failed")


def _wait(selector: selectors.BaseSelector, deadline: float) -> int:
    remaining = deadline - time.monotonic()
    events = selector.select(remaining) if remaining > 0 else []
    if not events:
        raise ProbeTimeout("no answer to the health probe's SELECT 1 in time")
    return events[0][1]


def _forget_flights() -> None:
    """In a forked child: the parent's probes and lock are not ours."""
    global _lock
    _lock = threading.Lock()
    _flights.clear()
    _last_status.clear()
