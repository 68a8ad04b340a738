"""From run records to medians, ratios, the targets and a text table."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from .configs import ALL_CONFIGS
from .workloads import WORKLOADS

METRICS = (
    "throughput",
    "p50_ms",
    "p99_ms",
    "fairness",
    "peak_connections",
    "cpu_us",
    "server_cpu_us",
    "other_cpu",
    "cache_hit_ratio",
)
BASELINES = ("native", "persistent")
# What each baseline is on each server (a run has configurations of one).
BASELINE_CONFIGS = {
    "native": ("native",),
    "persistent": ("persistent", "mysql-persistent"),
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


def _by_rep(records: list[dict[str, Any]], reps: int, metric: str) -> list[Any]:
    values: list[Any] = [None] * reps
    for record in records:
        if "error" in record:
            continue
        value = record.get(metric)
        if metric == "cache_hit_ratio":
            value = (record.get("cache") or {}).get("hit_ratio")
        values[record["rep"]] = value
    return values


def summarise(records: list[dict[str, Any]], reps: int) -> dict[str, Any]:
    """{workload: {config: {metric: spread, "x<baseline>": ratio spreads}}}."""
    summary: dict[str, Any] = {}
    for workload in WORKLOADS:
        rows: dict[str, Any] = {}
        mine = [r for r in records if r["workload"] == workload]
        for config in ALL_CONFIGS:
            runs = [r for r in mine if r["config"] == config]
            if not runs:
                continue
            row: dict[str, Any] = {
                metric: spread(_by_rep(runs, reps, metric)) for metric in METRICS
            }
            row["errors"] = sum(r.get("errors", 0) for r in runs)
            row["failed_runs"] = sum("error" in r for r in runs)
            row["pool_size"] = runs[0]["pool_size"]
            for baseline in BASELINES:
                base = [r for r in mine if r["config"] in BASELINE_CONFIGS[baseline]]
                for metric in ("throughput", "p50_ms"):
                    row[f"{metric}_x_{baseline}"] = spread(
                        paired_ratios(
                            _by_rep(runs, reps, metric), _by_rep(base, reps, metric)
                        )
                    )
            rows[config] = row
        if rows:
            summary[workload] = rows
    return summary


def _get(summary: dict[str, Any], workload: str, config: str, key: str) -> Any:
    return summary.get(workload, {}).get(config, {}).get(key)


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of issues #3 and #6, each with what was measured."""

    def ratio(workload: str, key: str) -> dict[str, float] | None:
        return _get(summary, workload, "selecto", key)

    def check(name: str, goal: str, value: Any, holds: Any) -> dict[str, Any]:
        known = value is not None and not math.isnan(value.get("median", math.nan))
        return {
            "target": name,
            "goal": goal,
            "measured": value,
            "holds": bool(holds(value["median"])) if known else None,
        }

    native_conns = _get(summary, "request-8t", "native", "peak_connections")
    selecto_conns = _get(summary, "request-8t", "selecto", "peak_connections")
    conns_ratio = None
    if native_conns and selecto_conns and native_conns["median"]:
        conns_ratio = {"median": selecto_conns["median"] / native_conns["median"]}
    fairness = [
        _get(summary, workload, "selecto", "fairness")
        for workload in ("request-8t", "contention")
    ]
    worst_fairness = None
    if all(fairness):
        worst_fairness = min(fairness, key=lambda s: s["median"])  # type: ignore[index]
    return [
        check(
            "request-8t throughput vs native",
            ">= 1.15x",
            ratio("request-8t", "throughput_x_native"),
            lambda v: v >= 1.15,
        ),
        check(
            "  (the same, selecto-pool with 2 connections)",
            ">= 1.15x",
            _get(summary, "request-8t", "selecto-2", "throughput_x_native"),
            lambda v: v >= 1.15,
        ),
        check(
            "request-8t throughput vs persistent",
            ">= 1.05x",
            ratio("request-8t", "throughput_x_persistent"),
            lambda v: v >= 1.05,
        ),
        check(
            "request-8t server connections vs native",
            "<= 0.5x",
            conns_ratio,
            lambda v: v <= 0.5,
        ),
        check(
            "request-1t p50 latency vs native",
            "<= 0.85x",
            ratio("request-1t", "p50_ms_x_native"),
            lambda v: v <= 0.85,
        ),
        check(
            "planning-heavy query p50 vs native",
            "<= 0.10x",
            ratio("planning", "p50_ms_x_native"),
            lambda v: v <= 0.10,
        ),
        check(
            "  (the same, server CPU per request only)",
            "<= 0.10x",
            _server_cpu_ratio(summary, "planning"),
            lambda v: v <= 0.10,
        ),
        check(
            "checkout+checkin p50 vs native",
            "<= 0.60x",
            ratio("checkout", "p50_ms_x_native"),
            lambda v: v <= 0.60,
        ),
        check(
            "fairness (min/max per thread, worst of request-8t, contention)",
            ">= 0.8",
            worst_fairness,
            lambda v: v >= 0.8,
        ),
    ]


def _server_cpu_ratio(summary: dict[str, Any], workload: str) -> Any:
    """selecto's server CPU per request over native's (medians), if measured."""
    mine = _get(summary, workload, "selecto", "server_cpu_us")
    native = _get(summary, workload, "native", "server_cpu_us")
    if not mine or not native or not mine["n"] or not native["n"]:
        return None
    return {"median": mine["median"] / native["median"]}


def _fmt(value: float | None, digits: int) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.{digits}f}"


def _cell(s: dict[str, float] | None, digits: int, spread_too: bool = True) -> str:
    if not s or not s.get("n", 1) or math.isnan(s["median"]):
        return "-"
    text = _fmt(s["median"], digits)
    if spread_too and "min" in s and s["min"] != s["max"]:
        text += f" ({_fmt(s['min'], digits)}-{_fmt(s['max'], digits)})"
    return text


HEADER = (
    f"{'configuration':<16} {'req/s (min-max)':>22} {'x native':>17} "
    f"{'x persist':>9} {'p50 ms':>8} {'p99 ms':>8} {'fair':>5} {'conns':>5} "
    f"{'cpu us/req':>10} {'server':>7} {'hit':>6}"
)


def table(summary: dict[str, Any], excluded: dict[str, str]) -> str:
    """The results as fixed-width text, one block per workload."""
    lines: list[str] = []
    for workload, rows in summary.items():
        lines += ["", f"{workload}: {WORKLOADS[workload].title}", HEADER]
        for config, row in rows.items():
            digits = 0 if row["throughput"]["median"] >= 100 else 1
            lines.append(
                f"{config:<16} {_cell(row['throughput'], digits):>22} "
                f"{_cell(row['throughput_x_native'], 2):>17} "
                f"{_cell(row['throughput_x_persistent'], 2, False):>9} "
                f"{_cell(row['p50_ms'], 3, False):>8} "
                f"{_cell(row['p99_ms'], 2, False):>8} "
                f"{_cell(row['fairness'], 2, False):>5} "
                f"{_cell(row['peak_connections'], 0, False):>5} "
                f"{_cell(row['cpu_us'], 0, False):>10} "
                f"{_cell(row['server_cpu_us'], 0, False):>7} "
                f"{_cell(row['cache_hit_ratio'], 3, False):>6}"
                + (f"  {row['errors']} errors" if row["errors"] else "")
            )
        other = [r["other_cpu"]["max"] for r in rows.values() if r["other_cpu"]["n"]]
        if other:
            lines.append(
                "other processes used at most "
                f"{max(other):.0%} of the cores during these runs"
            )
    for config, reason in excluded.items():
        lines.append(f"\nexcluded {config}: {reason}")
    return "\n".join(lines)


def targets_table(checks: list[dict[str, Any]]) -> str:
    lines = ["", "targets (selecto-pool, cache on; medians of paired ratios):"]
    for item in checks:
        verdict = {True: "holds", False: "MISSED", None: "not measured"}[item["holds"]]
        lines.append(
            f"  {item['target']:<62} {item['goal']:>8}  "
            f"{_cell(item['measured'], 2):>18}  {verdict}"
        )
    return "\n".join(lines)
