"""One run in a process of its own: ``python -m bench.worker SPEC_JSON``.

Django's settings are process-wide, so each configuration x workload x
repetition gets a fresh interpreter; so do the data setup and the side-by-side
run of ``bench.ab`` (``mode`` "setup", "ab"). The database URL comes in
``DATABASE_URL`` (never on the command line: it holds a password); the result
is printed as one JSON line on stdout.
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import django
import environ
from django.conf import settings

from .configs import ALL_CONFIGS, DJ_DB_CONN_POOL, MYSQL_DJ_DB_CONN_POOL, database

#: Requests each thread makes before the clock starts (see ``run``).
PRIME = 5
PRIME_TIMEOUT = 120.0
#: How long connections outlive the window (> 2 of the parent's CPU samples).
HOLD_NS = 300_000_000


@dataclass
class ThreadResult:
    """What one thread did inside the measured window."""

    latencies_ns: list[int] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""


def configure(configs: Sequence[str], app_name: str, pool_size: int) -> None:
    """Django settings with ``configs`` (names of ``bench.configs.CONFIGS``).

    One configuration is the ``default`` alias. Several (``bench.ab``) are
    each an alias of its name, and ``default`` is the first one's too.
    """
    base = environ.Env.db_url_config(os.environ["DATABASE_URL"])
    aliases = {
        name: database(ALL_CONFIGS[name], base, app_name, pool_size) for name in configs
    }
    databases = {"default": aliases[configs[0]]}
    if len(configs) > 1:
        databases.update(aliases)
    apps = dict.fromkeys(app for name in configs for app in ALL_CONFIGS[name].apps)
    settings.configure(
        DATABASES=databases,
        INSTALLED_APPS=[*apps, "testproject.library", "bench"],
        DEBUG=False,
        USE_TZ=True,
        TIME_ZONE="UTC",
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        SECRET_KEY="bench",
    )
    django.setup()


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the workload: ``warmup`` seconds unmeasured, then ``duration``.

    Each thread first makes ``PRIME`` requests, and the clock starts once all
    have: on a busy machine, opening the pool's first connections can take
    longer than the warmup, which would then eat into the measured window.
    """
    from . import cycles
    from .workloads import WORKLOADS

    workload = WORKLOADS[spec["workload"]]
    body = cycles.BODIES[workload.body]
    results = [ThreadResult() for _ in range(workload.threads)]
    window: dict[str, int] = {}
    marks: dict[str, Any] = {}

    def start_clock() -> None:
        window["from"] = time.perf_counter_ns() + int(spec["warmup"] * 1e9)
        window["to"] = window["from"] + int(spec["duration"] * 1e9)
        # The same instants on the clock the parent samples CPU counters with.
        offset = time.monotonic_ns() - time.perf_counter_ns()
        window["from_monotonic"] = window["from"] + offset
        window["to_monotonic"] = window["to"] + offset

    primed = threading.Barrier(workload.threads + 1, action=start_clock)
    # Connections stay open until the parent has read the CPU counters past
    # the window: a backend that exits takes its CPU time along.
    sampled = threading.Event()

    def request(rng: random.Random, result: ThreadResult) -> None:
        try:
            cycles.request(body, rng)
        except Exception as exc:
            result.errors += 1
            result.first_error = result.first_error or repr(exc)[:300]

    def loop(index: int) -> None:
        from django.db import connections

        rng = random.Random(spec["seed"] * 1000 + index)
        result = results[index]
        try:
            for _ in range(PRIME):
                request(rng, result)
            primed.wait(timeout=PRIME_TIMEOUT)
            began = time.perf_counter_ns()
            while began < window["to"]:
                if index == 0 and "cache" not in marks and began >= window["from"]:
                    # Here, not in the main thread: that one may wait seconds
                    # for the GIL while 32 threads run.
                    marks["cache"] = _cache_counts(spec)
                request(rng, result)
                ended = time.perf_counter_ns()
                if began >= window["from"]:
                    result.latencies_ns.append(ended - began)
                began = ended
        finally:
            sampled.wait(timeout=PRIME_TIMEOUT)
            connections.close_all()

    threads = [
        threading.Thread(target=loop, args=(i,), name=f"bench-{i}")
        for i in range(workload.threads)
    ]
    for thread in threads:
        thread.start()
    try:
        primed.wait(timeout=PRIME_TIMEOUT)
        _sleep_until(window["to"] + HOLD_NS)
    finally:
        sampled.set()
    for thread in threads:
        thread.join()
    summary = summarise_threads([r.latencies_ns for r in results], spec["duration"])
    summary["window_ns"] = [window["from_monotonic"], window["to_monotonic"]]
    summary["errors"] = sum(r.errors for r in results)
    summary["first_error"] = next((r.first_error for r in results if r.errors), "")
    summary["cache"] = _cache_delta(spec, marks.get("cache"))
    return summary


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (nan when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(math.ceil(pct / 100 * len(sorted_values)), 1)
    return sorted_values[rank - 1]


def summarise_threads(latencies_ns: list[list[int]], duration: float) -> dict[str, Any]:
    """Throughput, latency percentiles and fairness of one run."""
    merged = sorted(value for thread in latencies_ns for value in thread)
    per_thread = [len(thread) for thread in latencies_ns]
    busiest = max(per_thread, default=0)
    return {
        "requests": len(merged),
        "throughput": len(merged) / duration,
        "p50_ms": percentile(merged, 50) / 1e6,
        "p99_ms": percentile(merged, 99) / 1e6,
        "mean_ms": statistics.fmean(merged) / 1e6 if merged else math.nan,
        "per_thread": per_thread,
        # Least over most work done by a thread: 1.0 is perfectly fair.
        "fairness": min(per_thread) / busiest if busiest else math.nan,
    }


def _sleep_until(when_ns: int) -> None:
    time.sleep(max(when_ns - time.perf_counter_ns(), 0) / 1e9)


def _cache_counts(spec: dict[str, Any]) -> tuple[int, int] | None:
    if not ALL_CONFIGS[spec["config"]].selecto:
        return None
    import selecto_pool

    stats = selecto_pool.pool_stats("default")
    return stats.cache_hits, stats.cache_misses


def _cache_delta(spec: dict[str, Any], before: Any) -> dict[str, Any] | None:
    after = _cache_counts(spec)
    if after is None or before is None:
        return None
    hits, misses = after[0] - before[0], after[1] - before[1]
    lookups = hits + misses
    return {
        "hits": hits,
        "misses": misses,
        # pool_stats() sums over open connections only: a connection
        # replaced in the window would make a delta negative.
        "hit_ratio": round(hits / lookups, 4) if lookups > 0 else None,
    }


def shut_down() -> None:
    """Close every connection and pool, so that the process exits at once."""
    from django.db import connections

    for wrapper in connections.all():
        wrapper.close()
        # Django's native pool and selecto_pool's (None for the others).
        if getattr(wrapper, "pool", None) is not None:
            wrapper.close_pool()
    engines = {database["ENGINE"] for database in settings.DATABASES.values()}
    if engines & {DJ_DB_CONN_POOL, MYSQL_DJ_DB_CONN_POOL}:
        from dj_db_conn_pool.core import pool_container

        pool_container.dispose()


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    configs = spec.get("configs") or [spec["config"]]
    configure(configs, spec["app_name"], spec["pool_size"])
    if spec["mode"] == "setup":
        from . import fixtures

        fixtures.create()
        result: dict[str, Any] = {"ok": True}
    elif spec["mode"] == "ab":
        from . import ab

        result = {"samples": ab.measure(configs)}
    else:
        result = run(spec)
    shut_down()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
