"""The numbers ``pool_stats()`` reports."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._config.options import PoolOptions
from .._conn.outages import OutageLog
from .._conn.statements import CACHE_COUNTERS
from .usage import CHECKOUTS, REPLACED, ROLLBACKS, TIMEOUTS, UsageSnapshot


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of one pool, cheap to take and safe to publish (no secrets)."""

    name: str
    pool_size: int
    max_overflow: int
    #: Connections open or being opened right now.
    connections: int
    #: Connections waiting in the pool for a client.
    idle: int
    #: Connections checked out by Django or the direct API.
    in_use: int
    #: Connections beyond ``pool_size`` (closed again once idle for ``max_idle``).
    overflow: int
    #: Clients queued for a connection.
    waiting: int
    #: Successful checkouts since the pool started.
    checkouts: int
    #: Checkouts that gave up after ``checkout_timeout``.
    checkout_timeouts: int
    #: Failed attempts to open a connection (server down, bad password...).
    connection_errors: int
    #: Dead or broken connections discarded and replaced.
    connections_replaced: int
    #: Connections given back inside a transaction, which the pool rolled back.
    rollbacks_on_return: int
    #: Connections opened since the pool started (initial fill included,
    #: failed attempts not).
    connections_opened: int
    #: Median and 99th percentile of the last 1000 checkout waits.
    checkout_wait_p50_ms: float
    checkout_wait_p99_ms: float
    #: When the pool was created (seconds since the epoch).
    started_at: float
    #: Prepared-statement cache, summed over the open connections: statements
    #: prepared now, executions of a prepared one (hits), statements prepared
    #: (misses), LRU evictions, caches emptied by DDL/DEALLOCATE (invalidations),
    #: statements run unprepared because the server could not type them.
    cache_statements: int
    cache_hits: int
    cache_misses: int
    cache_evictions: int
    cache_invalidations: int
    cache_fallbacks: int
    cache_hit_ratio: float
    #: Connections held past ``leak_detection_threshold`` (each reported once).
    leaks: int
    closed: bool

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def snapshot(
    *,
    name: str,
    options: PoolOptions,
    psycopg_pool_stats: Mapping[str, int],
    usage: UsageSnapshot,
    caches: list[dict[str, int]],
    leaks: int,
    started_at: float,
    closed: bool,
) -> PoolStats:
    """One pool's ``PoolStats``, from psycopg_pool's ``get_stats()`` (public
    keys), the pool's own usage counters and its connections' caches."""
    raw = psycopg_pool_stats
    connections = raw.get("pool_size", 0)
    counts = usage.counts
    return PoolStats(
        name=name,
        pool_size=options.pool_size,
        max_overflow=options.max_overflow,
        connections=connections,
        idle=raw.get("pool_available", 0),
        in_use=usage.in_use,
        overflow=max(connections - options.pool_size, 0),
        waiting=usage.waiting,
        checkouts=counts[CHECKOUTS],
        checkout_timeouts=counts[TIMEOUTS],
        connection_errors=raw.get("connections_errors", 0),
        connections_replaced=counts[REPLACED] + raw.get("connections_lost", 0),
        rollbacks_on_return=counts[ROLLBACKS],
        connections_opened=raw.get("connections_num", 0)
        - raw.get("connections_errors", 0),
        checkout_wait_p50_ms=percentile(usage.waits, 50),
        checkout_wait_p99_ms=percentile(usage.waits, 99),
        started_at=started_at,
        **cache_totals(caches),
        leaks=leaks,
        closed=closed,
    )


def cache_totals(caches: list[dict[str, int]]) -> dict[str, Any]:
    """The per-connection cache counters summed, plus the pool's hit ratio."""
    totals: dict[str, Any] = {
        f"cache_{key}": sum(cache[key] for cache in caches) for key in CACHE_COUNTERS
    }
    lookups = totals["cache_hits"] + totals["cache_misses"]
    totals["cache_hit_ratio"] = (
        round(totals["cache_hits"] / lookups, 4) if lookups else 0.0
    )
    return totals


def percentile(samples: list[float], pct: int) -> float:
    """The pct-th percentile of ``samples`` (0.0 when there are none)."""
    if len(samples) < 2:
        return round(samples[0], 3) if samples else 0.0
    return round(statistics.quantiles(samples, n=100, method="inclusive")[pct - 1], 3)


def exhausted_message(stats: PoolStats, timeout: float, outage: OutageLog) -> str:
    """Why a checkout timed out, in the words of the pool's state."""
    message = (
        f"no connection of pool {stats.name!r} became free within {timeout:.2f} s "
        f"(checkout_timeout): {stats.in_use} in use of pool_size "
        f"{stats.pool_size} + max_overflow {stats.max_overflow}, "
        f"{stats.waiting} other client(s) waiting"
    )
    opening = stats.connections - stats.idle - stats.in_use
    if outage.failures:
        message += (
            f"; the last {outage.failures} attempt(s) to connect failed, for "
            f"{time.monotonic() - outage.since:.1f} s ({outage.last_error}): "
        )
        message += (
            "the server refuses the login (credentials, database, connection "
            f"limits?); next attempt in {outage.retry_delay():.1f} s"
            if outage.refusing
            else "is the database server reachable?"
        )
    elif opening > 0 and stats.idle == 0:
        message += (
            f"; {opening} connection(s) still being opened: is the database "
            "server slow or unreachable?"
        )
    return message
