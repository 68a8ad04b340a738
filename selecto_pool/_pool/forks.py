"""Which process a pool belongs to, at the cost of comparing two integers.

A pool inherited across ``fork()`` must not touch its sockets: they are the
parent's. ``os.getpid()`` is a system call; the pool's hot path compares the
generation it was born in with the current one instead, bumped in every
forked child.
"""

from __future__ import annotations

import os

_generation = [0]
_watching = False


def _forked() -> None:
    _generation[0] += 1


def current() -> int:
    """The fork generation of this process (0 in the process that started)."""
    return _generation[0]


def watch() -> None:
    """Count forks from now on; registered with the first pool, not at import."""
    global _watching
    if not _watching:
        os.register_at_fork(after_in_child=_forked)
        _watching = True
