"""The configurations compared: one ``DATABASES["default"]`` entry each.

Every configuration gets the same connection parameters (and an
``application_name`` per run, by which the connections it uses are counted);
only the engine and its pooling options differ. ``TimeZone=UTC`` is set at
connect time, as on a production server, so that no configuration pays an
extra ``SET TIME ZONE`` per new connection.

The ``mysql-*`` configurations (``python -m bench --mysql``) run on MariaDB,
where connections are counted by database instead: each run has the
benchmark database to itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

STOCK = "django.db.backends.postgresql"
SELECTO = "selecto_pool.backend"
DJ_DB_CONN_POOL = "dj_db_conn_pool.backends.postgresql"
MYSQL_STOCK = "django.db.backends.mysql"
MYSQL_SELECTO = "selecto_pool.backend.mysql"
MYSQL_DJ_DB_CONN_POOL = "dj_db_conn_pool.backends.mysql"

Settings = dict[str, Any]


@dataclass(frozen=True)
class Config:
    """One way of giving Django its connections."""

    name: str
    title: str
    #: Threads share ``pool_size`` connections (False: one per thread or request).
    pooled: bool
    #: The DATABASES entry's engine-specific part, for a pool of ``size``.
    settings: Callable[[int], Settings]
    selecto: bool = False
    apps: tuple[str, ...] = field(default=())
    #: The workloads it runs in (empty: all).
    only: tuple[str, ...] = field(default=())
    #: "postgresql" or "mysql": which server it runs on.
    vendor: str = "postgresql"

    def runs_in(self, workload: str) -> bool:
        return not self.only or workload in self.only


def _unpooled(engine: str, conn_max_age: int | None) -> Callable[[int], Settings]:
    """Django's own backend, without a pool (whatever the size)."""
    return lambda size: {"ENGINE": engine, "CONN_MAX_AGE": conn_max_age}


def _djdbcp(engine: str) -> Callable[[int], Settings]:
    """django-db-connection-pool's backend on ``engine``, a fixed pool."""
    return lambda size: {
        "ENGINE": engine,
        "POOL_OPTIONS": {"POOL_SIZE": size, "MAX_OVERFLOW": 0},
    }


def _native(size: int, **options: Any) -> Settings:
    pool = {"min_size": size, "max_size": size}
    return {"ENGINE": STOCK, "OPTIONS": {**options, "pool": pool}}


def _selecto(size: int, engine: str = SELECTO, **pool: Any) -> Settings:
    pool = {"pool_size": size, "max_overflow": 0, **pool}
    return {"ENGINE": engine, "OPTIONS": {"pool": pool}}


CONFIGS: dict[str, Config] = {
    config.name: config
    for config in (
        Config(
            "nopool",
            "Django, no pooling (CONN_MAX_AGE=0)",
            pooled=False,
            settings=_unpooled(STOCK, 0),
        ),
        Config(
            "persistent",
            "Django, persistent connections (CONN_MAX_AGE=None)",
            pooled=False,
            settings=_unpooled(STOCK, None),
        ),
        Config(
            "native",
            "Django's native pool (OPTIONS['pool'])",
            pooled=True,
            settings=_native,
        ),
        Config(
            "native-prep",
            "native pool + server_side_binding, prepare_threshold=2",
            pooled=True,
            settings=lambda size: _native(
                size, server_side_binding=True, prepare_threshold=2
            ),
        ),
        Config(
            "djdbcp",
            "django-db-connection-pool (SQLAlchemy QueuePool)",
            pooled=True,
            settings=_djdbcp(DJ_DB_CONN_POOL),
        ),
        Config(
            "selecto",
            "selecto-pool, statement cache on (defaults)",
            pooled=True,
            settings=_selecto,
            selecto=True,
            apps=("selecto_pool",),
        ),
        Config(
            "selecto-2",
            "selecto-pool, defaults, 2 connections whatever the workload",
            pooled=True,
            settings=lambda size: _selecto(2),
            selecto=True,
            apps=("selecto_pool",),
            # Where threads outnumber connections: how pool size plays with
            # the GIL (see docs/benchmarks.md, "Sizing").
            only=("request-8t", "contention"),
        ),
        Config(
            "selecto-nocache",
            "selecto-pool, prepared_statement_cache_size=0",
            pooled=True,
            settings=lambda size: _selecto(size, prepared_statement_cache_size=0),
            selecto=True,
            apps=("selecto_pool",),
        ),
    )
}


MYSQL_CONFIGS: dict[str, Config] = {
    config.name: config
    for config in (
        Config(
            "mysql-nopool",
            "Django's MySQL backend, no pooling (CONN_MAX_AGE=0)",
            pooled=False,
            settings=_unpooled(MYSQL_STOCK, 0),
            vendor="mysql",
        ),
        Config(
            "mysql-persistent",
            "Django's MySQL backend, persistent connections (CONN_MAX_AGE=None)",
            pooled=False,
            settings=_unpooled(MYSQL_STOCK, None),
            vendor="mysql",
        ),
        Config(
            "mysql-djdbcp",
            "django-db-connection-pool's MySQL backend (SQLAlchemy QueuePool)",
            pooled=True,
            settings=_djdbcp(MYSQL_DJ_DB_CONN_POOL),
            vendor="mysql",
        ),
        Config(
            "mysql-selecto",
            "selecto-pool's MySQL ENGINE (defaults)",
            pooled=True,
            settings=lambda size: _selecto(size, MYSQL_SELECTO),
            apps=("selecto_pool",),
            vendor="mysql",
        ),
    )
}
#: Every configuration by name, for the workers.
ALL_CONFIGS = {**CONFIGS, **MYSQL_CONFIGS}


def database(config: Config, base: Settings, app_name: str, size: int) -> Settings:
    """``base`` (from DATABASE_URL) configured as ``config`` for one run."""
    own = config.settings(size)
    if config.vendor == "mysql":
        return {**base, **own}
    options = {
        "application_name": app_name,
        "options": "-c TimeZone=UTC",
        **own.pop("OPTIONS", {}),
    }
    return {**base, **own, "OPTIONS": options}
