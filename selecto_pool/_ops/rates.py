"""Per-second rates of the counters, between two rounds of ``poolstats --watch``."""

from __future__ import annotations

from typing import Any

from .report import RATED

_Key = tuple[Any, Any, Any]  # host, pid, alias


class Rates:
    """Adds ``<counter>_per_second`` to each row: None in the first round, for
    a process seen for the first time, and for a counter that went down (a
    new process under a reused pid)."""

    def __init__(self) -> None:
        self._last: dict[_Key, tuple[float, dict[str, Any]]] = {}

    def add(self, rows: list[dict[str, Any]], now: float) -> None:
        """``now``: when the round's answers were in (``time.monotonic()``)."""
        seen: dict[_Key, tuple[float, dict[str, Any]]] = {}
        for data in rows:
            for counter in RATED:
                data[f"{counter}_per_second"] = None
            if data["status"] != "ok":
                continue
            key = (data["host"], data["pid"], data["alias"])
            before = self._last.get(key)
            if before is not None and now > before[0]:
                for counter in RATED:
                    data[f"{counter}_per_second"] = _rate(
                        before[1].get(counter), data.get(counter), now - before[0]
                    )
            seen[key] = (now, data)
        self._last = seen


def _rate(before: Any, after: Any, elapsed: float) -> float | None:
    if not isinstance(before, int) or not isinstance(after, int) or after < before:
        return None
    return round((after - before) / elapsed, 2)
