"""Include with ``path("", include("selecto_pool.urls"))`` for ``/health/db``."""

from __future__ import annotations

from django.urls import path

from .views import health

app_name = "selecto_pool"
urlpatterns = [path("health/db", health, name="health")]
