"""Exact costs per call of the checkout path: ``python -m bench --micro``.

A sampling profiler can't time a 40 us cycle precisely (its samples favour
system calls), so this times each step of a checkout with ``timeit``, in a
worker configured like the benchmark's, best of several rounds (and, from
``__main__``, best of several processes). Steps that name selecto_pool
internals are skipped when those names change.
"""

from __future__ import annotations

import random
import timeit
from collections.abc import Callable
from typing import Any

ROUNDS = 5


def _best_us(step: Callable[[], Any]) -> float:
    timer = timeit.Timer(step)
    number, _ = timer.autorange()
    return min(timer.repeat(ROUNDS, number)) / number * 1e6


def steps() -> dict[str, Callable[[], Any]]:
    """What to time, in the order a request meets it (after django.setup())."""
    import psycopg_pool
    from django.core import signals
    from django.db import connections

    from . import cycles

    rng = random.Random(1)
    # The wrapper itself, as Django's code uses it (django.db.connection is a
    # proxy that costs ~1.5 us per attribute).
    connection = connections["default"]
    connection.ensure_connection()
    connection.close()
    pool = connection.pool
    # Labels start with a space (the runner keeps only those), indented by
    # what includes what.
    found: dict[str, Callable[[], Any]] = {
        " request cycle: signals + ensure_connection() + close()": lambda: (
            cycles.request(cycles.checkout_only, rng)
        ),
        "  request signals alone (no connection)": lambda: (
            signals.request_started.send(sender=cycles.RequestHandler, environ={}),
            signals.request_finished.send(sender=cycles.RequestHandler),
        ),
        "  get_connection_params() (once a cycle)": connection.get_connection_params,
    }
    if pool is None:  # not Django's pool (django-db-connection-pool)
        return found
    found |= {
        "  DatabaseWrapper.pool (Django reads it 6 times a cycle)": lambda: (
            connection.pool
        ),
        "  pool.open() on an open pool (once a cycle)": pool.open,
        "  pool.getconn() + pool.putconn()": lambda: pool.putconn(pool.getconn()),
        "    psycopg_pool's own getconn() + putconn()": lambda: (
            psycopg_pool.ConnectionPool.putconn(
                pool, psycopg_pool.ConnectionPool.getconn(pool)
            )
        ),
    }
    if type(pool).__name__ == "SelectoPool":
        conn = pool.getconn()
        try:
            found.update(_selecto_steps(pool, conn))
        finally:
            pool.putconn(conn)
    return found


def _selecto_steps(pool: Any, conn: Any) -> dict[str, Callable[[], Any]]:
    """selecto_pool's additions to a checkout, each alone (a held connection)."""
    try:
        from selecto_pool import _health
    except ImportError:
        return {}
    candidates: dict[str, Callable[[], Any]] = {
        "    is_alive(conn): poll() on the socket": lambda: _health.is_alive(conn),
        "    _refuse_if_unusable(): forked? stopping?": pool._refuse_if_unusable,
        "    _vet(conn): is_alive + max_lifetime": lambda: pool._vet(conn),
        "    _clean(conn): transaction status, autocommit": lambda: pool._clean(conn),
    }
    found = {}
    for label, step in candidates.items():
        try:
            step()
        except AttributeError:
            continue  # renamed since: skip rather than fail
        found[label] = step
    return found


def measure() -> dict[str, float]:
    """{step: best microseconds per call}, run inside a configured worker."""
    return {label: round(_best_us(step), 2) for label, step in steps().items()}


def table(results: dict[str, dict[str, float]]) -> str:
    configs = list(results)
    labels = list(dict.fromkeys(label for r in results.values() for label in r))
    width = max(len(label) for label in labels)
    header = " ".join(f"{config:>16}" for config in configs)
    lines = [f"{'microseconds per call':<{width}} {header}"]
    for label in labels:
        cells = [results[c].get(label) for c in configs]
        lines.append(
            f"{label:<{width}} "
            + " ".join(f"{'-' if v is None else f'{v:.2f}':>16}" for v in cells)
        )
    return "\n".join(lines)
