"""Signal handlers: what the pool does when Django's schema changes."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from .._conn.statements import cache_of
from .._process import control_client, registry
from ..backend import engines

logger = logging.getLogger("selecto_pool.statements")


_last_plan: list[Any] = []


def invalidate_statement_caches(
    using: str = "default", plan: Any = None, **kwargs: Any
) -> None:
    """After ``migrate``: prepared statements may describe the old schema.

    Clears the caches of this process's pools at once and asks every other
    process with a pool on the migrated database to clear theirs.
    """
    # post_migrate comes once per app with models (selecto_pool has none);
    # every call of one migrate run shares the same plan object. flush sends
    # it too, without a plan: the schema didn't change then.
    if plan is None or (_last_plan and _last_plan[0] is plan):
        return
    _last_plan[:] = [plan]
    migrating = connections[using]
    if migrating.connection is not None and cache_of(migrating.connection):
        # Checked out by migrate itself: cleared now rather than on return.
        with migrating.cursor() as cursor:
            cursor.execute("DEALLOCATE ALL")
    pools = registry.all_pools()
    for pool in pools.values():
        pool.clear_prepared()
    logger.info(
        "migrate changed the schema of %r: prepared statements cleared in this "
        "process's %d pool(s)%s",
        using,
        len(pools),
        ", asking the other processes" if using in pools else "",
    )
    if using not in registry.all_pools() or engines.is_mysql(migrating):
        return  # MySQL: nothing prepared, and no LISTEN/NOTIFY to ask with
    try:
        control_client.broadcast(connections[using].get_connection_params(), "clear")
    except (psycopg.Error, ImproperlyConfigured) as exc:
        # The caches recover statement by statement anyway (see _statements).
        logger.warning("could not ask other processes to clear caches: %s", exc)
