"""A URLconf as a project using django-health-check and django-prometheus
writes it: the demo's URLs, ``/ht/`` with checks, and ``/metrics``.

Tests use it with ``override_settings(ROOT_URLCONF=...)``.
"""

from __future__ import annotations

from django.urls import include, path
from health_check.views import HealthCheckView

CHECK = "selecto_pool.contrib.health_check.PooledDatabase"


def _view(*checks: str | tuple[str, dict[str, str]]) -> object:
    return HealthCheckView.as_view(checks=checks)


urlpatterns = [
    path("ht/", _view(CHECK)),
    path("ht/spare/", _view((CHECK, {"alias": "spare"}))),
    path("ht/single/", _view((CHECK, {"alias": "single"}))),
    path("ht/missing/", _view((CHECK, {"alias": "missing"}))),
    path("ht/unpooled/", _view((CHECK, {"alias": "unpooled"}))),
    # django-health-check's stock database check, for comparison.
    path("ht/single/stock/", _view(("health_check.Database", {"alias": "single"}))),
    path("", include("django_prometheus.urls")),  # /metrics
    path("", include("testproject.urls")),
]
