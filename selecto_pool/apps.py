"""Django app config: adds the management commands and system checks."""

from __future__ import annotations

from django.apps import AppConfig


class SelectoPoolConfig(AppConfig):
    name = "selecto_pool"
    verbose_name = "selecto-pool"

    def ready(self) -> None:
        # Importing registers the system checks; connecting opens nothing.
        from django.db.models.signals import post_migrate

        from . import checks  # noqa: F401
        from ._ops.schema_changes import invalidate_statement_caches

        post_migrate.connect(
            invalidate_statement_caches, dispatch_uid="selecto_pool.invalidate"
        )
