"""The process-wide pools of the ORM: one per database alias, behind one lock.

A forked child (gunicorn ``--preload``, ``multiprocessing``, Django's parallel
test runner) must not use or close its parent's connections: their sockets are
shared with the parent. After ``fork()`` the child forgets the inherited pools
(keeping a reference so that nothing finalises their sockets) and builds its
own on first use.

At interpreter exit, every pool of this process, the ORM's and those of
``start_pool()`` and ``astart_pool()``, is drained and closed (``_shutdown``).
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar, cast

from .._pool.abc import Pool
from .._pool.async_pool import AsyncSelectoPool
from . import shutdown

P = TypeVar("P", bound=Pool)
#: A pool of the direct API: ``start_pool()``'s (either adapter) or
#: ``astart_pool()``'s, whose methods are coroutines (not a ``Pool``).
DirectPool = Pool | AsyncSelectoPool

# Re-entrant: a pool factory may register its fork callback while we build it.
_lock = threading.RLock()
_pools: dict[str, Pool] = {}
# Pools inherited from a parent process: referenced, never used or closed.
_inherited: list[Pool | AsyncSelectoPool] = []
_after_fork_callbacks: list[Callable[[], None]] = []
_fork_hook_installed = False
# Bumped whenever a pool is added, replaced or forgotten, so that a Django
# connection can keep its pool at hand and know when to look it up again.
version = 0
# Pools from start_pool() and astart_pool(), stopped at exit unless their
# owner stopped them.
_direct: weakref.WeakSet[DirectPool] = weakref.WeakSet()
_exit_hook_installed = False


def get_or_create(alias: str, target: Any, factory: Callable[[], P]) -> P:
    """The pool of ``alias``, built by ``factory`` if missing or out of date."""
    pool = _pools.get(alias)
    if pool is not None and pool.target == target:
        return cast(P, pool)
    stale = None
    with _lock:
        _install_fork_hook()
        _install_exit_hook()
        pool = _pools.get(alias)
        if pool is None or pool.target != target:
            stale, pool = pool, factory()
            _pools[alias] = pool
            _bump()
    if stale is not None:
        # Connections still checked out are closed when they come back.
        stale.close(timeout=1.0)
    return cast(P, pool)


def _bump() -> None:
    global version
    version += 1


def get(alias: str) -> Pool | None:
    return _pools.get(alias)


def discard(alias: str, pool: Pool | None = None) -> Pool | None:
    """Forget the pool of ``alias`` (only if it is ``pool``, when given)."""
    with _lock:
        current = _pools.get(alias)
        if current is None or (pool is not None and current is not pool):
            return None
        _bump()
        return _pools.pop(alias)


def alias_of(pool: Pool) -> str | None:
    return next((alias for alias, known in _pools.items() if known is pool), None)


def all_pools() -> dict[str, Pool]:
    return dict(_pools)


def track(pool: DirectPool) -> None:
    """Remember a pool from ``start_pool()`` or ``astart_pool()``, to stop it
    at interpreter exit."""
    with _lock:
        _install_exit_hook()
        _direct.add(pool)


def direct_pools() -> list[DirectPool]:
    """The open pools of the direct API in this process (each has ``stats()``)."""
    with _lock:
        return [pool for pool in _direct if not pool.closed]


def on_fork_in_child(callback: Callable[[], None]) -> None:
    """Run ``callback`` in a forked child, after the pools were forgotten."""
    with _lock:
        if callback not in _after_fork_callbacks:
            _after_fork_callbacks.append(callback)


def _forget_inherited_pools() -> None:
    global _lock
    # The parent's lock may have been held by a thread that doesn't exist here.
    _lock = threading.RLock()
    _inherited.extend(_pools.values())
    _pools.clear()
    _bump()
    _inherited.extend(_direct)
    _direct.clear()
    for callback in _after_fork_callbacks:
        callback()


def _install_fork_hook() -> None:
    """Registered on first use rather than at import: no import side effects."""
    global _fork_hook_installed
    if not _fork_hook_installed:
        os.register_at_fork(after_in_child=_forget_inherited_pools)
        _fork_hook_installed = True


def _install_exit_hook() -> None:
    """Also registered on first use: importing selecto_pool changes nothing."""
    global _exit_hook_installed
    if not _exit_hook_installed:
        atexit.register(_stop_at_exit)
        _exit_hook_installed = True


def _stop_at_exit() -> None:
    with _lock:
        pools = [*_pools.values(), *_direct]
    shutdown.stop_pools(pools)


def close_pools_of_database(name: str) -> None:
    """Close every pool connected to database ``name`` (before DROP DATABASE)."""
    with _lock:
        closing = {
            alias: pool for alias, pool in _pools.items() if pool.target[0] == name
        }
        for alias in closing:
            del _pools[alias]
        _bump()
    for pool in closing.values():
        pool.close()
