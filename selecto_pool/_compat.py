"""Every private name selecto_pool uses from psycopg, psycopg_pool and Django.

Nothing else in the package touches another library's private names: they
are reached through this module only, so that a release that changes one is
found here, by ``check()`` when the first pool opens (it raises
``IncompatibleVersion`` naming the library, its version and what is missing)
and by ``tests/test_compat.py``, one test per name, rather than as a feature
that quietly stops working. Each name says why no public API does the job.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeAlias

import psycopg
import psycopg_pool

from .errors import IncompatibleVersion

AnyConnection: TypeAlias = "psycopg.Connection[Any] | psycopg.AsyncConnection[Any]"

# psycopg keeps its per-connection LRU of prepared statements in the private
# PrepareManager; Django needs statements to survive ROLLBACK, which only a
# subclass can give (see _conn.statements).
try:
    from psycopg._preparing import Prepare as Prepare
    from psycopg._preparing import PrepareManager as PrepareManager
except ImportError as exc:  # pragma: no cover - depends on the installed psycopg
    raise IncompatibleVersion(
        f"selecto_pool needs psycopg's PrepareManager (psycopg._preparing), which "
        f"psycopg {psycopg.__version__} does not have: install the psycopg "
        "version selecto_pool declares."
    ) from exc

# The PrepareManager members StatementCache overrides or reads.
_PREPARE_MANAGER_MEMBERS = (
    "get",
    "maybe_add_to_cache",
    "validate",
    "clear",
    "_should_discard",
    "_rotate",
    "maintain_gen",
    "key",
    "_names",
    "_to_flush",
    "prepared_max",
)


def set_prepare_manager(conn: AnyConnection, manager: Any) -> None:
    """Give ``conn`` its statement cache: psycopg has no argument for it."""
    if not hasattr(conn, "_prepared"):
        raise IncompatibleVersion(
            f"psycopg {psycopg.__version__} connections have no '_prepared' "
            "statement cache for selecto_pool to replace."
        )
    conn._prepared = manager


def prepare_manager_of(conn: AnyConnection) -> Any:
    return getattr(conn, "_prepared", None)


def set_rowcount(cursor: psycopg.Cursor[Any], rowcount: int) -> None:
    """Carry a row count over from the cursor that really ran a batch.

    ``rowcount`` is read-only; psycopg's cursors keep it in a slot.
    """
    cursor._rowcount = rowcount


def pool_of(conn: AnyConnection) -> Any:
    """The psycopg_pool pool ``conn`` is checked out from (None when idle)."""
    return getattr(conn, "_pool", None)


def expires_at(conn: AnyConnection) -> float:
    """psycopg_pool's ``max_lifetime`` deadline of ``conn`` (monotonic seconds).

    psycopg_pool only looks at it when a connection is returned; the pool
    looks at checkout too (see _pool.pool).
    """
    try:
        return float(conn._expire_at)
    except AttributeError:
        raise IncompatibleVersion(
            f"psycopg_pool {psycopg_pool.__version__} no longer sets the "
            "'_expire_at' deadline selecto_pool reads on its connections."
        ) from None


def take_ready(pool: Any) -> Any:
    """An idle connection of ``pool``, taken now, or None.

    psycopg_pool's ``getconn()`` queues the caller when no connection is idle
    and grows the pool for it; ``/health/db`` must do neither (it would queue
    ahead of the application and open connections that linger for
    ``max_idle``). Its own critical section, without the queueing.
    """
    with pool._lock:
        conn = pool._get_ready_connection(None)
    if conn is not None:
        conn._pool = pool  # as getconn() marks a connection checked out
    return conn


async def atake_ready(pool: Any) -> Any:
    """``take_ready()`` for an async pool (its lock is an asyncio one)."""
    async with pool._lock:
        conn = await pool._get_ready_connection(None)
    if conn is not None:
        conn._pool = pool
    return conn


#: The task psycopg_pool schedules to retry a failed connection attempt with
#: a backoff; the pool hands it to its reconnect probe instead. The async
#: pool's is a class of its own (its ``run()`` is a coroutine).
AddConnection: type[Any] = psycopg_pool.pool.AddConnection
AsyncAddConnection: type[Any] = psycopg_pool.pool_async.AddConnection
#: What tells an async pool's worker to end: psycopg_pool's close() sends
#: it; the async pool too when its loop shuts down with the pool open (see
#: AsyncSelectoPool._stop_workers).
AsyncStopWorker: type[Any] = psycopg_pool.pool_async.StopWorker


def configure_hook(wrapper: Any) -> Callable[[psycopg.Connection[Any]], Any]:
    """Django's per-connection setup (time zone, role), as its own pool calls it.

    Django runs it in ``init_connection_state()`` for unpooled connections
    only; a pool must run it on each new connection.
    """
    hook: Callable[[psycopg.Connection[Any]], Any] = wrapper._configure_connection
    return hook


class _EveryAlias:
    def __contains__(self, alias: object) -> bool:
        return True


def non_atomic_for_every_database(view: Callable[..., Any]) -> None:
    """Exempt ``view`` from ``ATOMIC_REQUESTS`` on every database.

    ``transaction.non_atomic_requests(using=...)`` takes alias names, which
    are only known from the settings, never read at import; Django looks the
    aliases up in this attribute with ``in``.
    """
    view._non_atomic_requests = _EveryAlias()  # type: ignore[attr-defined]


def mysql_native_connection(conn: Any) -> Any:
    """The ``MYSQL*`` of a mysqlclient connection, in a capsule.

    mysqlclient offers no public way to it (nor to the server's transaction
    status, which MariaDB's client library reads from it without a round
    trip: see _conn.mysql_status).
    """
    return conn._get_native_connection()


_passed: set[str] = set()
_check_lock = threading.Lock()


def _psycopg_problems() -> list[str]:
    """What psycopg and psycopg_pool lack of what is used here."""
    problems = [
        f"psycopg {psycopg.__version__}: PrepareManager.{name}"
        for name in _PREPARE_MANAGER_MEMBERS
        if not _has(PrepareManager, name)
    ]
    if not _has(Prepare, "SHOULD") or not _has(Prepare, "YES"):
        problems.append(f"psycopg {psycopg.__version__}: Prepare.SHOULD/YES")
    problems += [
        f"psycopg {psycopg.__version__}: {owner.__name__}.{name}"
        for owner, name in ((psycopg.Cursor, "_rowcount"),)
        if not _has(owner, name)
    ]
    pool_version = psycopg_pool.__version__
    for owner, name in (
        (psycopg_pool.ConnectionPool, "schedule_task"),
        (psycopg_pool.ConnectionPool, "run_task"),
        (psycopg_pool.ConnectionPool, "_get_ready_connection"),
        (AddConnection, "run"),
        (psycopg_pool.AsyncConnectionPool, "schedule_task"),
        (psycopg_pool.AsyncConnectionPool, "_get_ready_connection"),
        (psycopg_pool.AsyncConnectionPool, "run_task"),
        (AsyncAddConnection, "run"),
    ):
        if not callable(getattr(owner, name, None)):
            problems.append(f"psycopg_pool {pool_version}: {owner.__name__}.{name}")
    return problems


def _django_problems() -> list[str]:
    """What Django lacks of what the backend uses."""
    # Imported here: the pool and the direct API don't need Django's backends.
    import django
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.backends.base.creation import BaseDatabaseCreation
    from django.db.backends.postgresql import base as postgresql_base

    return [
        f"Django {django.__version__}: {owner.__name__}.{name}"
        for owner, name in (
            (BaseDatabaseWrapper, "_set_autocommit"),
            (BaseDatabaseCreation, "_clone_test_db"),
            (BaseDatabaseCreation, "_destroy_test_db"),
            (postgresql_base.DatabaseWrapper, "pool"),
            (postgresql_base.DatabaseWrapper, "_configure_connection"),
            (postgresql_base.DatabaseWrapper, "_configure_role"),
            (postgresql_base.DatabaseWrapper, "close_pool"),
            (postgresql_base, "CursorMixin"),
        )
        if not _has(owner, name)
    ]


def _has(owner: Any, name: str) -> bool:
    # Instance attributes that PrepareManager sets in __init__.
    if name in ("_names", "_to_flush", "prepared_max") and isinstance(owner, type):
        try:
            return hasattr(owner(), name)
        except Exception:
            return False
    return hasattr(owner, name)


def _mysql_problems() -> list[str]:
    """What mysqlclient and Django's MySQL backend lack of what is used here."""
    import django
    import MySQLdb
    import MySQLdb.connections  # not imported by MySQLdb itself
    from django.db.backends.base.base import BaseDatabaseWrapper

    problems = []
    if not _has(MySQLdb.connections.Connection, "_get_native_connection"):
        problems.append(
            f"mysqlclient {getattr(MySQLdb, '__version__', '?')}: "
            "Connection._get_native_connection"
        )
    if not _has(BaseDatabaseWrapper, "_close"):
        problems.append(f"Django {django.__version__}: BaseDatabaseWrapper._close")
    return problems


_CHECKS = {
    "psycopg": _psycopg_problems,
    "django": _django_problems,
    "mysql": _mysql_problems,
}


def check(*, django: bool = False, mysql: bool = False) -> None:
    """Fail loudly if an installed library lacks a private name used here.

    Each part runs once per process: psycopg's and psycopg_pool's when the
    first pool opens, Django's (``django=True``) when the backend builds its
    first pool, mysqlclient's (``mysql=True``) when the first MySQL pool
    opens; never at import.
    """
    parts = ("mysql",) if mysql else ("psycopg", "django") if django else ("psycopg",)
    for part in parts:
        if part in _passed:
            continue
        with _check_lock:
            if problems := _CHECKS[part]():
                raise IncompatibleVersion(
                    "selecto_pool relies on names these versions no longer "
                    f"have: {'; '.join(problems)}. Install the versions "
                    "selecto_pool declares in its metadata."
                )
            _passed.add(part)
