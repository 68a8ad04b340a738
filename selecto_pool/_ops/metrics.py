"""Pool stats as metrics: one model, two outputs.

``families()`` describes every metric of this process's pools; the
OpenMetrics text of ``/health/db?format=openmetrics`` (``render()``) and the
prometheus_client collector (``selecto_pool.metrics``) are both made from it,
so they can't drift apart. Names follow Prometheus's conventions (base units,
``_total`` counters) and every sample carries ``host`` and ``pid``: behind a
load balancer each scrape reaches one process, and the series of different
processes must not collide. An ORM pool's samples carry its ``alias``; a
direct pool's (``start_pool()``, ``astart_pool()``) carry ``pool`` (its
name) and ``kind="direct"`` instead, so that neither kind's series can be
taken for the other's, and the alias series keep the labels they had.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from .._pool.stats import PoolStats
from .._process import control, direct, registry

CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
PREFIX = "selecto_pool_"
Number = int | float

# name -> (PoolStats field, help); a name ending in _seconds has that unit.
_GAUGES = {
    "connections": ("connections", "Connections open or being opened."),
    "connections_in_use": ("in_use", "Connections checked out."),
    "connections_idle": ("idle", "Connections idle in the pool."),
    "connections_min": ("pool_size", "pool_size: connections kept open."),
    "connections_max": ("max_size", "pool_size + max_overflow."),
    "clients_waiting": ("waiting", "Clients waiting for a connection."),
    "prepared_statements": ("cache_statements", "Statements prepared now."),
    "checkout_wait_p50_seconds": ("checkout_wait_p50_ms", "Median checkout wait."),
    "checkout_wait_p99_seconds": ("checkout_wait_p99_ms", "p99 checkout wait."),
    "start_time_seconds": ("started_at", "When the pool started (Unix time)."),
}
_COUNTERS = {
    "checkouts": ("checkouts", "Successful checkouts."),
    "checkout_timeouts": ("checkout_timeouts", "Checkouts that timed out."),
    "connection_errors": ("connection_errors", "Failed connection attempts."),
    "connections_opened": ("connections_opened", "Connections opened."),
    "connections_replaced": ("connections_replaced", "Dead connections replaced."),
    "rollbacks_on_return": ("rollbacks_on_return", "Returns rolled back."),
    "leaks": ("leaks", "Connections held past leak_detection_threshold."),
    # Not the statement cache's hits, misses...: sums over the open
    # connections, they drop when one closes (not counters, see limitations).
}
# Milliseconds in PoolStats, seconds in metrics.
_MILLISECONDS = ("checkout_wait_p50_ms", "checkout_wait_p99_ms")
# name -> (responder counter, help)
_CONTROL = {
    "control_requests": ("requests", "Signed control requests accepted."),
    "control_rejected": ("rejected", "Control messages dropped (not verified)."),
    "control_errors": ("errors", "Control requests that failed."),
    "control_clears": ("clears", "Statement caches cleared on request."),
    "control_restarts": ("restarts", "Control connections opened again."),
}


@dataclass(frozen=True)
class Family:
    """One metric: ``name`` without the ``_total`` of a counter's samples."""

    name: str
    kind: str
    help: str
    unit: str = ""
    samples: list[tuple[dict[str, str], Number]] = field(default_factory=list)


def identity() -> dict[str, str]:
    """The labels telling this process apart from the others."""
    return {"host": socket.gethostname(), "pid": str(os.getpid())}


def current(up: Mapping[str, bool] | None = None) -> list[Family]:
    """The families of this process's pools now (``up``: the health probes)."""
    pools = {alias: pool.stats() for alias, pool in registry.all_pools().items()}
    return families(pools, control.counters(), up, dict(direct.stats()))


def families(
    pools: Mapping[str, PoolStats],
    responders: Mapping[str, Mapping[str, int]],
    up: Mapping[str, bool] | None = None,
    direct_pools: Mapping[str, PoolStats] | None = None,
) -> list[Family]:
    who = identity()
    labelled = [({"alias": alias, **who}, stats) for alias, stats in pools.items()]
    labelled += [
        ({"pool": name, "kind": "direct", **who}, stats)
        for name, stats in (direct_pools or {}).items()
    ]
    result = []
    if up is not None:
        up_family = Family(
            PREFIX + "up", "gauge", "Whether the health probe succeeded."
        )
        up_family.samples.extend(
            ({"alias": alias, **who}, int(ok)) for alias, ok in up.items()
        )
        result.append(up_family)
    for kind, table in (("gauge", _GAUGES), ("counter", _COUNTERS)):
        for name, (stat, help_text) in table.items():
            unit = "seconds" if name.endswith("_seconds") else ""
            family = Family(PREFIX + name, kind, help_text, unit)
            family.samples.extend(
                (labels, _value(stats, stat)) for labels, stats in labelled
            )
            result.append(family)
    for name, (counter, help_text) in _CONTROL.items():
        family = Family(PREFIX + name, "counter", help_text)
        family.samples.extend(
            ({"alias": alias, **who}, counts[counter])
            for alias, counts in responders.items()
        )
        result.append(family)
    return result


def _value(stats: PoolStats, stat: str) -> Number:
    if stat == "max_size":
        return stats.pool_size + stats.max_overflow
    value: Number = getattr(stats, stat)
    return value / 1000.0 if stat in _MILLISECONDS else value


def render(families: list[Family]) -> str:
    """OpenMetrics text: exact integers, one family after the other, ``# EOF``."""
    lines = []
    for family in families:
        lines.append(f"# TYPE {family.name} {family.kind}")
        if family.unit:
            lines.append(f"# UNIT {family.name} {family.unit}")
        lines.append(f"# HELP {family.name} {_escape(family.help)}")
        suffix = "_total" if family.kind == "counter" else ""
        for labels, value in family.samples:
            rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{family.name}{suffix}{{{rendered}}} {_number(value)}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _number(value: Number) -> str:
    if isinstance(value, int):
        return str(value)  # exact: counters never lose digits
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)  # the shortest text that reads back as the same float


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
