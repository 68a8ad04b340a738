"""Leak detection: connections held longer than ``leak_detection_threshold``.

Only built when the option is on, so that a pool without it pays nothing: no
stack is captured and no checkout is recorded. With it on, each checkout
records when, by which thread and from where (the stack, its source lines
looked up only if it is ever reported), and the pool's maintenance thread
(``_maintenance``) scans the records a few times per threshold. A connection
held past the threshold is logged once, as a warning on ``selecto_pool`` with
the stack that checked it out, and counted in ``PoolStats.leaks``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("selecto_pool.pool")

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

# Scan often enough to report a leak within ~1.5x the threshold, but never
# more than 20 times a second nor less than once every 5 s.
_MIN_SCAN_SECONDS = 0.05
_MAX_SCAN_SECONDS = 5.0


@dataclass
class _Checkout:
    since: float
    #: Who took it: "thread 'MainThread'", "task 'Task-7'".
    holder: str
    stack: traceback.StackSummary
    reported: bool = False


class LeakDetector:
    """The checked-out connections of one pool, and which of them overstay."""

    def __init__(self, pool_name: str, threshold: float):
        self.pool_name = pool_name
        self.threshold = threshold
        self.scan_interval = min(
            max(threshold / 2, _MIN_SCAN_SECONDS), _MAX_SCAN_SECONDS
        )
        self._lock = threading.Lock()
        # Keyed by id(): holding the connection itself would keep alive a
        # connection that its user dropped without returning it.
        self._out: dict[int, _Checkout] = {}
        self._leaks = 0

    @property
    def leaks(self) -> int:
        """Connections reported as leaked since the pool started."""
        return self._leaks

    def checked_out(self, conn: Any, depth: int = 1, task: str | None = None) -> None:
        """Record a checkout; ``depth`` frames above the caller are the pool's.

        ``task`` names the asyncio task that took it, for an async pool (all
        its tasks share one thread).
        """
        frame = sys._getframe(depth + 1)
        stack = traceback.StackSummary.extract(
            traceback.walk_stack(frame), lookup_lines=False
        )
        stack.reverse()
        # The innermost frames are the pool's own (checkout(), execute()...).
        while stack and stack[-1].filename.startswith(_PACKAGE_DIR):
            stack.pop()
        holder = (
            f"task {task!r}"
            if task is not None
            else f"thread {threading.current_thread().name!r}"
        )
        record = _Checkout(time.monotonic(), holder, stack)
        with self._lock:
            self._out[id(conn)] = record

    def returned(self, conn: Any) -> None:
        with self._lock:
            record = self._out.pop(id(conn), None)
        if record is not None and record.reported:
            logger.info(
                "pool %r: the connection reported as leaked came back after %.1f s",
                self.pool_name,
                time.monotonic() - record.since,
            )

    def scan(self) -> int:
        """Report the connections newly past the threshold; return how many."""
        now = time.monotonic()
        overdue = []
        with self._lock:
            for record in self._out.values():
                if not record.reported and now - record.since >= self.threshold:
                    record.reported = True
                    overdue.append(record)
            self._leaks += len(overdue)
        for record in overdue:
            logger.warning(
                "pool %r: a connection checked out %.1f s ago by %s has not "
                "been returned (leak_detection_threshold %g s); it was checked "
                "out at:\n%s",
                self.pool_name,
                now - record.since,
                record.holder,
                self.threshold,
                "".join(record.stack.format()).rstrip(),
            )
        return len(overdue)
