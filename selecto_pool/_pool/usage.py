"""What a pool's clients do with it: the counters behind ``pool_stats()``.

psycopg_pool counts requests and connections; operators also want how many
connections are checked out right now, how many clients wait, how long they
waited, and how often checkouts time out. One plain lock guards all of it,
taken twice per checkout and once per checkin; ``wait_for_returns()``
(a draining ``stop()``) waits on a condition that checkins signal only while
somebody drains.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

CHECKOUTS = "checkouts"
TIMEOUTS = "checkout_timeouts"
REPLACED = "connections_replaced"
ROLLBACKS = "rollbacks_on_return"


@dataclass(frozen=True)
class UsageSnapshot:
    in_use: int
    waiting: int
    counts: dict[str, int]
    #: Recent checkout waits in milliseconds.
    waits: list[float]


class Usage:
    """The checkout counters of one pool."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)
        self._in_use = 0
        # Clients inside psycopg_pool's getconn(), i.e. waiting (psycopg_pool's
        # own count keeps timed-out clients until a connection comes back).
        self._waiting = 0
        # Recent checkout waits, for the p50/p99 that operators watch.
        self._waits: deque[float] = deque(maxlen=1000)
        self._counts = dict.fromkeys((CHECKOUTS, TIMEOUTS, REPLACED, ROLLBACKS), 0)
        self._draining = False

    def start_waiting(self) -> None:
        with self._lock:
            self._waiting += 1

    def stop_waiting(self, outcome: str | None = None) -> None:
        """A client leaves getconn() without a connection (``outcome`` counted)."""
        with self._lock:
            self._waiting -= 1
            if outcome is not None:
                self._counts[outcome] += 1

    def checked_out(self, waited_ms: float | None) -> None:
        """None: a checkout that never waited, not one of the clients' waits."""
        with self._lock:
            self._waiting -= 1
            self._in_use += 1
            self._counts[CHECKOUTS] += 1
            if waited_ms is not None:
                self._waits.append(waited_ms)

    def checked_in(self) -> None:
        with self._lock:
            self._in_use = max(self._in_use - 1, 0)
            if self._draining:
                self._returned.notify_all()

    def count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def wait_for_returns(self, deadline: float) -> int:
        """From now on checkins signal; wait until none is out or ``deadline``.

        Returns how many connections are still checked out.
        """
        with self._returned:
            self._draining = True
            while self._in_use and (remaining := deadline - time.monotonic()) > 0:
                self._returned.wait(remaining)
            return self._in_use

    def snapshot(self) -> UsageSnapshot:
        with self._lock:
            return UsageSnapshot(
                self._in_use, self._waiting, dict(self._counts), list(self._waits)
            )
