"""Rows, totals and plain-text tables for ``poolstats`` (people and scripts).

The default table fits a 100-column terminal: sizes, use and trouble. The
rest (idle and overflow connections, the median wait, replaced connections,
the statement cache, age) is in ``--wide`` and ``--json``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

# (column title, key in a row, in the default table); also the JSON row keys.
COLUMNS = (
    ("HOST", "host", True),
    ("PID", "pid", True),
    ("ALIAS", "alias", True),
    ("SIZE", "pool_size", True),
    ("MAX", "max_size", True),
    ("CONNS", "connections", True),
    ("IN USE", "in_use", True),
    ("IDLE", "idle", False),
    ("OVERFLOW", "overflow", False),
    ("WAITING", "waiting", True),
    ("CHECKOUTS", "checkouts", True),
    ("P50 MS", "checkout_wait_p50_ms", False),
    ("P99 MS", "checkout_wait_p99_ms", True),
    ("TIMEOUTS", "checkout_timeouts", True),
    ("ERRORS", "connection_errors", True),
    ("RECONNECTS", "connections_replaced", False),
    ("STMTS", "cache_statements", False),
    ("HITS", "cache_hits", False),
    ("MISSES", "cache_misses", False),
    ("EVICTED", "cache_evictions", False),
    ("HIT RATIO", "cache_hit_ratio", False),
    ("AGE S", "age_seconds", False),
)
#: The width the default table keeps to (host names are cut to fit).
WIDTH = 100
#: Counters shown as per-second rates by ``--watch`` (title suffix "/S").
RATED = ("checkouts", "checkout_timeouts", "connection_errors")
_SUMMED = (
    "pool_size",
    "max_size",
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
_GAP = "  "
_SILENT = "(no answer)"
_MIN_HOST = 8


def columns(wide: bool) -> list[tuple[str, str]]:
    """(title, key) of the table's columns."""
    return [(title, key) for title, key, default in COLUMNS if wide or default]


#: What a row's ``kind`` says: the ORM's pool of an alias, or a pool of the
#: direct API (``start_pool()``, ``astart_pool()``), whose ALIAS column shows
#: ``direct:<name>``.
ALIAS, DIRECT = "alias", "direct"


def row(
    host: str, pid: int | None, alias: str, stats: dict[str, Any], kind: str = ALIAS
) -> dict[str, Any]:
    """One process's pool as a flat row (every COLUMNS key present)."""
    data = {key: stats.get(key) for _, key, _ in COLUMNS}
    data.update(host=host, pid=pid, alias=alias, kind=kind)
    if isinstance(stats.get("pool_size"), int) and isinstance(
        stats.get("max_overflow"), int
    ):
        data["max_size"] = stats["pool_size"] + stats["max_overflow"]
    data["age_seconds"] = round(time.time() - stats["started_at"], 1)
    data["status"] = "ok"
    return data


def silent_row(host: str, pid: int | None, alias: str) -> dict[str, Any]:
    data: dict[str, Any] = dict.fromkeys((key for _, key, _ in COLUMNS), None)
    data.update(host=host, pid=pid, alias=alias, kind=ALIAS, status="no answer")
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
    for key in RATED:
        rates = [r.get(f"{key}_per_second") for r in answered]
        known = [rate for rate in rates if rate is not None]
        total[f"{key}_per_second"] = round(sum(known), 2) if known else None
    # Processes, not rows: one may have several aliases and direct pools.
    total["processes"] = len({(r["host"], r["pid"]) for r in answered})
    return total


class Table:
    """A plain-text table whose column widths, once set, stay (``--watch``
    prints the header once and every later round below it)."""

    def __init__(self, wide: bool, rates: bool = False):
        self.columns = columns(wide)
        self.wide = wide
        self.rates = rates
        self.widths: list[int] | None = None

    def titles(self) -> list[str]:
        return [
            f"{title}/S" if self.rates and key in RATED else title
            for title, key in self.columns
        ]

    def header(self) -> str:
        assert self.widths is not None, "render() a round first"
        return self._line(self.titles())

    def render(
        self, rows: Sequence[dict[str, Any]], total: dict[str, Any]
    ) -> list[str]:
        """The lines of one round: a line per row, then the totals line."""
        lines = [self._cells(data) for data in rows]
        total_cells = [self._total_label(total), "", ""]
        total_cells += [_cell(total.get(self._key(key))) for _, key in self.columns[3:]]
        if self.widths is None:
            self.widths = self._fit([self.titles(), *lines], total_cells[0])
        return [self._line(cells) for cells in lines] + [self._spanned(total_cells)]

    # -- internals ----------------------------------------------------------
    def _key(self, key: str) -> str:
        return f"{key}_per_second" if self.rates and key in RATED else key

    def _cells(self, data: dict[str, Any]) -> list[str]:
        if data["status"] != "ok":
            # Shorter than the others: the note runs over the number columns.
            return [str(data["host"]), str(data["pid"]), data["alias"], _SILENT]
        return [_cell(data.get(self._key(key))) for _, key in self.columns]

    @staticmethod
    def _total_label(total: dict[str, Any]) -> str:
        count = total["processes"]
        return f"TOTAL ({count} process{'es' if count != 1 else ''})"

    def _fit(self, lines: list[list[str]], label: str) -> list[int]:
        full = [line for line in lines if line[-1] != _SILENT]
        widths = [max(len(line[i]) for line in full) for i in range(len(self.columns))]
        # The totals label spans HOST, PID and ALIAS.
        label_needs = len(label) - widths[1] - widths[2] - 2 * len(_GAP)
        widths[0] = max(widths[0], label_needs)
        over = sum(widths) + len(_GAP) * (len(widths) - 1) - WIDTH
        if not self.wide and over > 0:
            # Cut long host names (the numbers stay whole).
            floor = max(min(widths[0], _MIN_HOST), label_needs, len("HOST"))
            widths[0] = max(widths[0] - over, floor)
        return widths

    def _line(self, cells: list[str]) -> str:
        assert self.widths is not None
        out = []
        for i, (cell, width) in enumerate(zip(cells, self.widths, strict=False)):
            if i == 0 and len(cell) > width:
                cell = _short_host(cell, width)
            out.append(cell.ljust(width))
        return _GAP.join(out).rstrip()

    def _spanned(self, cells: list[str]) -> str:
        assert self.widths is not None
        span = sum(self.widths[:3]) + 2 * len(_GAP)
        rest = [c.ljust(w) for c, w in zip(cells[3:], self.widths[3:], strict=True)]
        return _GAP.join([cells[0].ljust(span), *rest]).rstrip()


def _short_host(host: str, width: int) -> str:
    """A host name's first DNS label (an address stays whole), cut to
    ``width`` if need be."""
    if ":" not in host and not host.replace(".", "").isdigit():
        host = host.split(".", 1)[0]
    return host if len(host) <= width else f"{host[: width - 3]}..."


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if value == 0 and isinstance(value, float):
        return "0"
    if isinstance(value, float):
        return f"{value:.2f}" if value < 1 else f"{value:.1f}"
    return str(value)
