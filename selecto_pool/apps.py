"""Django app config: adds the management commands and system checks."""

from __future__ import annotations

import importlib
import sys

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
        # A Celery worker has imported celery before it starts Django; other
        # processes pay nothing for this.
        if "celery" in sys.modules:
            from ._process import celery_boundary

            celery_boundary.connect(importlib.import_module("celery.signals"))
