"""What this process decided about each statement, by signature: bounded,
keyed by a hash (no SQL text kept), and safe across ``fork()``.

``execution`` reads a statement's state here before it runs, and records
its runs and the decisions they lead to (verified, rejected, relapsed).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

# What the process knows of a statement signature, as bits of one int:
VERIFIED = 1  # ran server-side without a typing error
REJECTED = 2  # can't be typed server-side: runs the stock way
RELAPSED = 4  # was verified, then failed to type once (a schema change)
ONE_RUN = 8  # executions, counted (up to the threshold) above the flags


class Decisions:
    """Process-wide decisions per statement signature, bounded in count.

    Keys are ints (``signature()``), so an entry's size doesn't depend on
    the SQL: about 110 bytes, 1.5 MiB for the 10,000 entries at most (see
    docs/prepared-statements.md). Reads are lock-free (a dict lookup);
    writes happen in the first executions of a statement and on its
    decisions only, under the lock.
    """

    def __init__(self, size: int = 10_000):
        self._states: OrderedDict[int, int] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()
        self._fork_safe = False

    def get(self, key: int) -> int:
        return self._states.get(key, 0)

    def update(self, key: int, change: Callable[[int], int]) -> int:
        if not self._fork_safe:
            # Registered on first use, not at import. A thread of the parent
            # may hold the lock at fork(): the child gets a lock of its own.
            os.register_at_fork(after_in_child=self._new_lock)
            self._fork_safe = True
        with self._lock:
            state = change(self._states.get(key, 0))
            self._states[key] = state
            if len(self._states) > self._size:
                # The oldest first: statements built with ever-new text.
                self._states.popitem(last=False)
            return state

    def _new_lock(self) -> None:
        self._lock = threading.Lock()


decisions = Decisions()


def counted(threshold: int) -> Callable[[int], int]:
    return lambda state: state + ONE_RUN if state // ONE_RUN < threshold else state


def verified(state: int) -> int:
    return state | VERIFIED


def rejected(state: int) -> int:
    return state | REJECTED


def relapsed(state: int) -> int:
    if state & RELAPSED:
        return state | REJECTED  # a second time: the stock way from now on
    return (state & ~VERIFIED) | RELAPSED


def signature(query: str, params: Any) -> int:
    """The statement and the Python types of its parameters (which decide the
    server-side types, and so whether the server can type the statement).

    Python's hash of them: a fixed size, whatever the SQL, and no cost on
    the hot path (the string's hash is computed once, and any dict lookup
    of the SQL would compute it). It is SipHash, 64 bits keyed per process:
    a new statement collides with one of the 10,000 remembered about once
    in 10**15, and two colliding statements would share decisions, at worst
    aborting one transaction, as a schema change does.
    """
    return hash((query, _types(params)))


def batch_signature(query: str, rows: Iterable[Any]) -> int:
    """The statement and every distinct tuple of parameter types of a batch:
    any row can be the one the server can't type."""
    return hash((query, "executemany", tuple(dict.fromkeys(map(_types, rows)))))


def _types(params: Any) -> tuple[Any, ...]:
    if isinstance(params, dict):
        return tuple(sorted((k, type(v)) for k, v in params.items()))
    return tuple(map(type, params))
