"""The chart for docs/benchmarks.md: throughput relative to Django's native pool.

One panel per workload, bars at the median with min-max whiskers, so that a
reader sees at once which configuration is faster and how sure that is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .configs import CONFIGS
from .workloads import WORKLOADS

COLORS = {
    "nopool": "#9e9e9e",
    "persistent": "#607d8b",
    "native": "#1f77b4",
    "native-prep": "#6baed6",
    "djdbcp": "#ff7f0e",
    "selecto": "#2ca02c",
    "selecto-2": "#17becf",
    "selecto-nocache": "#98df8a",
}


def draw(summary: dict[str, Any], path: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and no GUI toolkit
    import matplotlib.pyplot as plt

    workloads = [w for w in WORKLOADS if w in summary]
    columns = 2
    rows = math.ceil(len(workloads) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(12, 3.4 * rows), squeeze=False)
    for ax, workload in zip(axes.flat, workloads, strict=False):
        _panel(ax, workload, summary[workload])
    spare = list(axes.flat)[len(workloads) :]
    if spare and "request-8t" in summary:
        _connections(spare.pop(0), summary["request-8t"])
    for ax in spare:
        ax.axis("off")
    fig.suptitle(
        "Throughput relative to Django's native pool (median, min-max of paired "
        f"ratios; higher is better)\n{subtitle}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _panel(ax: Any, workload: str, rows: dict[str, Any]) -> None:
    names = [c for c in CONFIGS if c in rows and rows[c]["throughput_x_native"]["n"]]
    ratios = [rows[c]["throughput_x_native"] for c in names]
    medians = [r["median"] for r in ratios]
    lows = [r["median"] - r["min"] for r in ratios]
    highs = [r["max"] - r["median"] for r in ratios]
    positions = range(len(names))
    ax.barh(
        positions,
        medians,
        xerr=[lows, highs],
        color=[COLORS.get(c, "#333333") for c in names],
        capsize=3,
    )
    ax.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_yticks(list(positions), names)
    ax.invert_yaxis()
    native = rows.get("native", {}).get("throughput", {}).get("median", math.nan)
    ax.set_title(
        f"{workload}: {WORKLOADS[workload].title}\n(native: {native:,.0f} req/s)",
        fontsize=9,
    )
    ax.tick_params(labelsize=8)
    for position, ratio in zip(positions, ratios, strict=True):
        # Right of the whisker, so that the two never overlap.
        ax.text(
            max(ratio["max"], ratio["median"]),
            position,
            f"  {ratio['median']:.2f}",
            va="center",
            fontsize=8,
        )
    ax.set_xlim(0, max([r["max"] for r in ratios] + [1.0]) * 1.25)
    ax.set_xlabel("x native pool's requests/s", fontsize=8)


def _connections(ax: Any, rows: dict[str, Any]) -> None:
    """Peak server connections of the 8-thread run (fewer is better)."""
    names = [c for c in CONFIGS if c in rows and rows[c]["peak_connections"]["n"]]
    peaks = [rows[c]["peak_connections"]["median"] for c in names]
    positions = range(len(names))
    ax.barh(positions, peaks, color=[COLORS.get(c, "#333333") for c in names])
    ax.set_yticks(list(positions), names)
    ax.invert_yaxis()
    for position, peak in zip(positions, peaks, strict=True):
        ax.text(peak, position, f"  {peak:.0f}", va="center", fontsize=8)
    ax.set_xlim(0, max([*peaks, 1]) * 1.25)
    ax.set_title(
        "request-8t: server connections (peak in pg_stat_activity;\n"
        "selecto: 4 pooled + 1 LISTEN connection for poolstats)",
        fontsize=9,
    )
    ax.tick_params(labelsize=8)
    ax.set_xlabel("connections (fewer is better)", fontsize=8)
