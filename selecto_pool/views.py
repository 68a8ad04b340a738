"""``/health/db``: is the database reachable through the pool, right now?

Public callers (load balancers) get the status only; staff users and callers
with the configured bearer token also get the probe latency and the pool's
stats, or OpenMetrics text with ``?format=openmetrics``.
"""

from __future__ import annotations

import hmac
import os
import socket
import time
from typing import Any

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache

from ._api import get_pool
from ._compat import non_atomic_for_every_database
from ._config.health import HealthSettings, health_settings
from ._ops import metrics, probe
from ._process import registry


@never_cache
def health(request: HttpRequest) -> HttpResponse:
    config = health_settings()
    status, probe_ms, error = _probe(config)
    details = _may_see_details(request, config)
    if request.GET.get("format") == "openmetrics":
        if not details:
            return HttpResponse("details need a token or a staff user\n", status=403)
        stats = {alias: pool.stats() for alias, pool in registry.all_pools().items()}
        body = metrics.render(stats, {config.database: status == "ok"})
        return HttpResponse(body, content_type=metrics.CONTENT_TYPE)

    payload: dict[str, Any] = {"status": status}
    if details:
        pool = registry.get(config.database)
        payload.update(
            database=config.database,
            probe_ms=probe_ms,
            error=error,
            host=socket.gethostname(),
            pid=os.getpid(),
            pool=pool.stats().as_dict() if pool else None,
        )
    response = JsonResponse(payload, status=200 if status == "ok" else 503)
    if status != "ok":
        response["Retry-After"] = str(config.retry_after)
    return response


non_atomic_for_every_database(health)


def _probe(config: HealthSettings) -> tuple[str, float | None, str | None]:
    """("ok" | "saturated" | "unavailable", latency in ms, error class name)."""
    try:
        pool = get_pool(config.database)
    except DatabaseError as exc:
        return "unavailable", None, type(exc).__name__
    stats = pool.stats()
    all_busy = stats.in_use >= stats.pool_size + stats.max_overflow
    if stats.waiting >= config.max_waiting or (
        all_busy and stats.checkout_wait_p99_ms > config.max_wait_ms
    ):
        # Don't queue behind the clients the pool can't serve already.
        return "saturated", None, None
    started = time.monotonic()
    try:
        conn = pool.getconn(timeout=config.probe_timeout)
        try:
            probe.select_one(conn)
        finally:
            pool.putconn(conn)
    except probe.errors() as exc:
        return "unavailable", None, type(exc).__name__
    return "ok", round((time.monotonic() - started) * 1000.0, 3), None


def _may_see_details(request: HttpRequest, config: HealthSettings) -> bool:
    user = getattr(request, "user", None)
    if user is not None and getattr(user, "is_staff", False):
        return True
    header = request.headers.get("Authorization", "")
    if config.token and header.startswith("Bearer "):
        return hmac.compare_digest(header[len("Bearer ") :], config.token)
    return False
