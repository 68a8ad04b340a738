"""What the backend supports: Django's PostgreSQL features, pooled by default."""

from __future__ import annotations

from typing import Any

from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import features as postgresql
from django.utils.functional import cached_property

# Django's own reason and tests, skipped for pooled connections.
_POOL_SKIP = "Pool does implicit health checks"
_HEALTH_CHECK_TESTS = {
    "backends.base.test_base.ConnectionHealthChecksTests.test_health_checks_enabled",
    "backends.base.test_base.ConnectionHealthChecksTests."
    "test_set_autocommit_health_checks_enabled",
}


class DatabaseFeatures(postgresql.DatabaseFeatures):
    @cached_property
    def django_test_skips(self) -> dict[str, set[str]]:  # type: ignore[override]
        # Overridden: Django recognises a pooled connection by a truthy
        # OPTIONS["pool"]; here the pool is on unless OPTIONS["pool"] is False.
        skips: dict[str, set[str]] = super().django_test_skips
        if self.is_pooled:
            skips.setdefault(_POOL_SKIP, set()).update(_HEALTH_CHECK_TESTS)
        return skips

    @property
    def is_pooled(self) -> bool:
        """Whether connections come from the pool (on unless turned off)."""
        wrapper: Any = self.connection
        return wrapper.alias != NO_DB_ALIAS and bool(wrapper.pool_options.enabled)
