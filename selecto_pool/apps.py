"""Django app config: adds the management commands and system checks."""

from __future__ import annotations

from django.apps import AppConfig


class SelectoPoolConfig(AppConfig):
    name = "selecto_pool"
    verbose_name = "selecto-pool"

    def ready(self) -> None:
        # Importing registers the system checks; nothing else happens here.
        from . import checks  # noqa: F401
