"""Small statistics, standard library only (the worker imports this too)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


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


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median and min-max of the finite ``values`` (nan when there are none)."""
    finite = [value for value in values if value is not None and math.isfinite(value)]
    if not finite:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {
        "median": statistics.median(finite),
        "min": min(finite),
        "max": max(finite),
        "n": len(finite),
    }


def paired_ratios(values: Sequence[float], bases: Sequence[float]) -> list[float]:
    """``values[i] / bases[i]`` for the repetitions where both exist.

    Runs of one repetition are interleaved, so pairing them cancels most of
    the machine's drift between repetitions.
    """
    return [
        value / base
        for value, base in zip(values, bases, strict=True)
        if value is not None
        and base is not None
        and math.isfinite(value)
        and math.isfinite(base)
        and base > 0
    ]
