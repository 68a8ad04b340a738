"""Pool stats as OpenMetrics text, for Prometheus and friends."""

from __future__ import annotations

from collections.abc import Mapping

from .._pool.stats import PoolStats

CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

# (metric name, type, help, PoolStats field, scale)
_METRICS = (
    ("pool_size", "gauge", "Configured pool_size.", "pool_size", 1),
    ("max_overflow", "gauge", "Configured max_overflow.", "max_overflow", 1),
    ("connections", "gauge", "Connections open or opening.", "connections", 1),
    ("in_use", "gauge", "Connections checked out.", "in_use", 1),
    ("idle", "gauge", "Connections idle in the pool.", "idle", 1),
    ("waiting", "gauge", "Clients waiting for a connection.", "waiting", 1),
    ("checkouts", "counter", "Successful checkouts.", "checkouts", 1),
    (
        "checkout_timeouts",
        "counter",
        "Checkouts that timed out.",
        "checkout_timeouts",
        1,
    ),
    ("connection_errors", "counter", "Failed connects.", "connection_errors", 1),
    ("reconnects", "counter", "Dead connections replaced.", "connections_replaced", 1),
    ("rollbacks", "counter", "Returns rolled back.", "rollbacks_on_return", 1),
    ("leaks", "counter", "Connections held past the leak threshold.", "leaks", 1),
    (
        "checkout_wait_p50_seconds",
        "gauge",
        "Median checkout wait.",
        "checkout_wait_p50_ms",
        0.001,
    ),
    (
        "checkout_wait_p99_seconds",
        "gauge",
        "p99 checkout wait.",
        "checkout_wait_p99_ms",
        0.001,
    ),
)


def render(pools: Mapping[str, PoolStats], up: Mapping[str, bool]) -> str:
    """One family per metric, one sample per alias; ends with ``# EOF``."""
    lines = [
        "# TYPE selecto_pool_up gauge",
        "# HELP selecto_pool_up Whether the health probe reached the database.",
    ]
    lines += [
        f'selecto_pool_up{{alias="{_label(a)}"}} {int(ok)}' for a, ok in up.items()
    ]
    for name, kind, help_text, field, scale in _METRICS:
        family = f"selecto_pool_{name}"
        lines += [f"# TYPE {family} {kind}", f"# HELP {family} {help_text}"]
        sample = f"{family}_total" if kind == "counter" else family
        for alias, stats in pools.items():
            value = getattr(stats, field) * scale
            lines.append(f'{sample}{{alias="{_label(alias)}"}} {value:g}')
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
