"""The pool of MySQL and MariaDB connections (mysqlclient), on ``GenericPool``.

It adds to the generic pool what only MySQL needs: the MySQL connection
driver (``_conn.mysql``), the compatibility check of mysqlclient's private
names when it opens, and, after ``fork()``, detaching the child from every
socket it inherited (mysqlclient, unlike psycopg, would close the parent's
sessions when the child frees or closes its copies).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from .. import _compat
from .._config.options import PoolOptions
from .._conn.mysql import MySQLDriver
from .generic import GenericPool

_pools: weakref.WeakSet[MySQLPool] = weakref.WeakSet()
_fork_hook = threading.Lock()
_fork_hook_installed = False


class MySQLPool(GenericPool[Any]):
    """A process-local pool of mysqlclient connections to one database."""

    def __init__(
        self,
        *,
        name: str,
        options: PoolOptions,
        kwargs: Mapping[str, Any],
        configure: Callable[[Any], object] | None = None,
        health_checks: bool = False,
        target: Any = None,
    ):
        self.driver = MySQLDriver(name, kwargs, configure)
        super().__init__(
            name=name,
            options=options,
            driver=self.driver,
            # CONN_HEALTH_CHECKS: a ping round trip at every checkout, on top
            # of the liveness test, as Django's stock backend pings.
            check=self.driver.ping if health_checks else None,
            target=target,
        )
        _watch_forks(self)

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        if self.closed:
            _compat.check(mysql=True)
        super().open(wait=wait, timeout=timeout)


def _watch_forks(pool: MySQLPool) -> None:
    """Registered with the first pool, not at import."""
    global _fork_hook_installed
    with _fork_hook:
        _pools.add(pool)
        if not _fork_hook_installed:
            os.register_at_fork(after_in_child=_detach_inherited)
            _fork_hook_installed = True


def _detach_inherited() -> None:
    """In a forked child: no inherited socket may be used or closed."""
    global _fork_hook
    # The parent's lock may have been held by a thread that doesn't exist here.
    _fork_hook = threading.Lock()
    for pool in list(_pools):
        pool.driver.detach()
    _pools.clear()
