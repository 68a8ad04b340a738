"""A django-health-check (v4) check of the database, through the pool.

List it among the checks of django-health-check's view, instead of (or next
to) its stock ``health_check.Database``::

    HealthCheckView.as_view(
        checks=["selecto_pool.contrib.health_check.PooledDatabase"]
    )

The stock check takes a connection the way a request does; on a saturated
pool it queues behind the application's requests, adds to their wait, and
answers after ``checkout_timeout``. This one runs the ``/health/db`` probe
instead (``_ops.probe``): it answers within ``probe_timeout`` + 0.2 s, shares
one probe among concurrent checks, and only ever uses a connection that is
idle, so it never queues nor grows the pool. ``probe_timeout``,
``max_waiting`` and ``max_wait_ms`` come from ``SELECTO_POOL_HEALTH``.
"""

from __future__ import annotations

import dataclasses
import datetime

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django.utils.connection import ConnectionDoesNotExist

try:
    from health_check.base import HealthCheck
    from health_check.exceptions import ServiceUnavailable
except ImportError as exc:  # not installed, or a version before 4
    raise ImportError(
        "selecto_pool.contrib.health_check needs django-health-check 4: "
        "pip install 'django-health-check>=4'"
    ) from exc

from .._api import get_pool
from .._config.health import HealthSettings, health_settings
from .._ops.probe import MARGIN, probe

__all__ = ["PooledDatabase"]


@dataclasses.dataclass
class PooledDatabase(HealthCheck):
    """Is ``alias``'s database reachable through this process's pool, now?

    Its messages name the alias, the pool's counts and an exception class,
    never a server's message (django-health-check shows them to anyone).
    """

    alias: str = "default"

    @property
    def timeout(self) -> datetime.timedelta:
        # django-health-check gives up on a check 1 s after this; the probe
        # answers within probe_timeout + 2 x MARGIN (docs/operations.md).
        try:
            probe_timeout = health_settings().probe_timeout
        except ImproperlyConfigured:  # run() reports it
            probe_timeout = HealthSettings.probe_timeout
        return datetime.timedelta(seconds=probe_timeout + 2 * MARGIN)

    def run(self) -> None:
        try:
            config = health_settings()
        except ImproperlyConfigured as exc:
            raise ServiceUnavailable(
                "SELECTO_POOL_HEALTH is invalid: see manage.py check "
                "(selecto_pool.E003)"
            ) from exc
        try:
            pool = get_pool(self.alias)
        except ConnectionDoesNotExist as exc:
            raise ServiceUnavailable("Database alias does not exist") from exc
        except ImproperlyConfigured as exc:
            raise ServiceUnavailable(
                f"DATABASES[{self.alias!r}] has no selecto_pool pool "
                f"({type(exc).__name__}): see manage.py check"
            ) from exc
        except DatabaseError as exc:  # PoolClosed: the pool is stopping
            raise ServiceUnavailable(
                f"pool {self.alias!r} is unavailable ({type(exc).__name__})"
            ) from exc
        result = probe(self.alias, pool, config)
        if result.status == "saturated":
            stats = pool.stats()
            raise ServiceUnavailable(
                f"pool {self.alias!r} is saturated: {stats.in_use} of "
                f"{stats.pool_size + stats.max_overflow} connection(s) in use, "
                f"{stats.waiting} client(s) waiting"
            )
        if result.status != "ok":
            raise ServiceUnavailable(
                f"no answer from the database through pool {self.alias!r} "
                f"({result.error})"
            )
