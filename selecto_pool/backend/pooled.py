"""What both ENGINEs' wrappers share: the alias's pool, kept at hand.

The PostgreSQL and the MySQL ``DatabaseWrapper`` each mix in
``AliasPoolMixin`` ahead of Django's: one pool per alias for the whole
process, in the registry, replaced when the settings it was built from change
(the test database) or after ``fork()``. Each ENGINE says how its pool is
built (``_new_pool``) and how its options are read (``pool_options``).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, cast

from django.db.backends.base.base import NO_DB_ALIAS

from .._config.options import PoolOptions
from .._pool.abc import Pool
from .._process import celery_boundary, registry

P = TypeVar("P", bound=Pool)


class AliasPoolMixin(Generic[P]):
    """The pool of a ``DatabaseWrapper``'s alias, built on first use."""

    alias: str
    settings_dict: dict[str, Any]

    @property
    def pool_options(self) -> PoolOptions:
        """Each ENGINE's: the alias's options, read once (a cached_property)."""
        raise NotImplementedError

    @property
    def pool(self) -> P | None:
        # Django's PostgreSQL backend reads OPTIONS["pool"] as psycopg_pool
        # arguments and keeps one pool per class (its MySQL backend has no
        # pool); ours has its own options and registry.
        # Django asks for the pool several times per checkout: keep it at hand
        # until the registry changes or the database NAME does (test setup).
        cached = self.__dict__.get("_pool_at_hand")
        name = self.settings_dict["NAME"]
        if cached is not None and cached[0] == registry.version and cached[1] == name:
            return cast(P, cached[2])
        if self.alias == NO_DB_ALIAS or not self.pool_options.enabled:
            return None
        pool = registry.get_or_create(self.alias, self._pool_target(), self._new_pool)
        self.__dict__["_pool_at_hand"] = (registry.version, name, pool)
        return pool

    def close_pool(self) -> None:
        """Close this alias's pool (the next query builds a new one).

        Not between two tasks of a Celery prefork worker, whose Django fixup
        closes the pool after each task: a selecto pool is fork-safe, the
        worker keeps it (see _process.celery_boundary).
        """
        if celery_boundary.keeps_pool(self.alias):
            return
        # Overridden so that closing never creates a pool just to close it.
        pool = registry.discard(self.alias)
        if pool is not None:
            pool.close()
        self.__dict__.pop("pool_options", None)
        self.__dict__.pop("_pool_at_hand", None)

    def _pool_target(self) -> tuple[Any, ...]:
        settings_dict = self.settings_dict
        return (
            settings_dict["NAME"],
            settings_dict["USER"],
            settings_dict["HOST"],
            settings_dict["PORT"],
        )

    def _new_pool(self) -> P:
        raise NotImplementedError
