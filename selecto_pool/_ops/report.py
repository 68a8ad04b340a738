"""Rows, totals and a plain-text table for ``poolstats`` (people and scripts)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

# (column title, key in a row) in display order; also the JSON row keys.
COLUMNS = (
    ("HOST", "host"),
    ("PID", "pid"),
    ("ALIAS", "alias"),
    ("SIZE", "pool_size"),
    ("CONNS", "connections"),
    ("IN USE", "in_use"),
    ("IDLE", "idle"),
    ("OVERFLOW", "overflow"),
    ("WAITING", "waiting"),
    ("CHECKOUTS", "checkouts"),
    ("WAIT P50 MS", "checkout_wait_p50_ms"),
    ("WAIT P99 MS", "checkout_wait_p99_ms"),
    ("TIMEOUTS", "checkout_timeouts"),
    ("CONN ERRORS", "connection_errors"),
    ("RECONNECTS", "connections_replaced"),
    ("STMTS", "cache_statements"),
    ("HITS", "cache_hits"),
    ("MISSES", "cache_misses"),
    ("EVICTED", "cache_evictions"),
    ("HIT RATIO", "cache_hit_ratio"),
    ("AGE S", "age_seconds"),
)
_SUMMED = (
    "pool_size",
    "connections",
    "in_use",
    "idle",
    "overflow",
    "waiting",
    "checkouts",
    "checkout_timeouts",
    "connection_errors",
    "connections_replaced",
    "cache_statements",
    "cache_hits",
    "cache_misses",
    "cache_evictions",
)
_WORST = ("checkout_wait_p50_ms", "checkout_wait_p99_ms")


def row(
    host: str, pid: int | None, alias: str, stats: dict[str, Any]
) -> dict[str, Any]:
    """One process's pool as a flat row (every COLUMNS key present)."""
    data = {key: stats.get(key) for _, key in COLUMNS}
    data.update(host=host, pid=pid, alias=alias)
    data["age_seconds"] = round(time.time() - stats["started_at"], 1)
    data["status"] = "ok"
    return data


def silent_row(host: str, pid: int | None, alias: str) -> dict[str, Any]:
    data: dict[str, Any] = dict.fromkeys((key for _, key in COLUMNS), None)
    data.update(host=host, pid=pid, alias=alias, status="no answer")
    return data


def totals(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sums of the counters; the worst of the wait percentiles."""
    answered = [r for r in rows if r["status"] == "ok"]
    # A process of another version may lack a field (None): counted as 0.
    total: dict[str, Any] = {key: sum(r[key] or 0 for r in answered) for key in _SUMMED}
    total.update(
        {key: max((r[key] or 0.0 for r in answered), default=0.0) for key in _WORST}
    )
    lookups = total["cache_hits"] + total["cache_misses"]
    total["cache_hit_ratio"] = (
        round(total["cache_hits"] / lookups, 4) if lookups else 0.0
    )
    total["processes"] = len(answered)
    return total


def table(rows: list[dict[str, Any]], total: dict[str, Any]) -> str:
    """Aligned columns, one line per process, then the totals line."""
    lines = [[title for title, _ in COLUMNS]]
    for data in rows:
        if data["status"] != "ok":
            cells = [str(data["host"]), str(data["pid"]), data["alias"], "(no answer)"]
            lines.append(cells + [""] * (len(COLUMNS) - len(cells)))
            continue
        lines.append([_cell(data[key]) for _, key in COLUMNS])
    count = total["processes"]
    total_cells = [f"TOTAL ({count} process{'es' if count != 1 else ''})", "", ""]
    total_cells += [_cell(total.get(key, "")) for _, key in COLUMNS[3:]]
    lines.append(total_cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) for cell, width in zip(line, widths, strict=True)
        ).rstrip()
        for line in lines
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if value < 1 else f"{value:.1f}"
    return str(value)
