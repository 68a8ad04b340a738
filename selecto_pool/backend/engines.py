"""Which Django connections are selecto_pool's, without importing a driver.

The MySQL ENGINE imports Django's MySQL backend, which needs mysqlclient: a
PostgreSQL-only project may not have it, so its class is looked up only if
something imported it already (a connection of that ENGINE exists).
"""

from __future__ import annotations

import sys
from typing import Any

POSTGRESQL = "selecto_pool.backend"
MYSQL = "selecto_pool.backend.mysql"
ENGINES = (POSTGRESQL, MYSQL)


def is_mysql(wrapper: Any) -> bool:
    """Whether ``wrapper`` is (a subclass of) the MySQL ENGINE's."""
    module = sys.modules.get(f"{MYSQL}.base")
    return module is not None and isinstance(wrapper, module.DatabaseWrapper)


def is_selecto(wrapper: Any) -> bool:
    """Whether ``wrapper`` is (a subclass of) one of selecto_pool's ENGINEs."""
    from .base import DatabaseWrapper

    return isinstance(wrapper, DatabaseWrapper) or is_mysql(wrapper)
