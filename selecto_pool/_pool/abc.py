"""What every pool offers, whichever driver its connections use.

``SelectoPool`` (psycopg connections, on psycopg_pool) and ``GenericPool``
(any DB-API driver: MySQL's) both satisfy ``Pool``, so that the registry,
the exit hook, the direct API, the commands and ``/health/db`` handle either
without knowing which.
"""

from __future__ import annotations

from typing import Any, Protocol

from .._config.options import PoolOptions
from .stats import PoolStats


class Pool(Protocol):
    name: str
    options: PoolOptions
    #: What the pool connects to; the registry replaces a pool whose target
    #: no longer matches the settings (e.g. the test database).
    target: Any
    owner_pid: int
    started_at: float

    @property
    def closed(self) -> bool: ...

    def open(self, wait: bool = False, timeout: float = 30.0) -> None: ...

    def getconn(self, timeout: float | None = None) -> Any: ...

    def getconn_if_idle(self) -> Any: ...

    def putconn(self, conn: Any, *, reset: bool = True) -> None: ...

    def stats(self) -> PoolStats: ...

    def clear_prepared(self) -> int: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    def close(self, timeout: float = 5.0) -> None: ...
