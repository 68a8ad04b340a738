"""``/health/db``: is the database reachable through the pool, right now?

Public callers (load balancers) get the status only; callers with the
configured bearer token, and staff users while the database answers, also
get the probe latency and the pool's stats, or OpenMetrics text with
``?format=openmetrics``. A bearer token that
doesn't match gets 401. The probe itself (``_ops.probe``) answers within
``probe_timeout`` and never takes a connection the application could use.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
from typing import Any

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache

from ._compat import non_atomic_for_every_database
from ._config.health import HealthSettings, health_settings
from ._ops import metrics
from ._ops.probe import probe_alias
from ._process import control, registry

PUBLIC, DETAILS, DENIED = "public", "details", "denied"


@never_cache
def health(request: HttpRequest) -> HttpResponse:
    config = health_settings()
    access = _token_access(request, config)
    if access == DENIED:
        response = JsonResponse({"error": "invalid_token"}, status=401)
        response["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return response
    result = probe_alias(config.database, config)
    if access == PUBLIC and result.status == "ok" and _is_staff(request):
        access = DETAILS
    wants_metrics = request.GET.get("format") == "openmetrics"
    if wants_metrics and access != DETAILS:
        return HttpResponse("details need a token or a staff user\n", status=403)
    if wants_metrics:
        families = metrics.current(up={config.database: result.status == "ok"})
        return HttpResponse(metrics.render(families), content_type=metrics.CONTENT_TYPE)
    payload: dict[str, Any] = {"status": result.status}
    if access == DETAILS:
        pool = registry.get(config.database)
        payload.update(
            database=config.database,
            probe_ms=result.probe_ms,
            error=result.error,
            host=socket.gethostname(),
            pid=os.getpid(),
            pool=pool.stats().as_dict() if pool else None,
            control=control.counters().get(config.database),
        )
    response = JsonResponse(payload, status=200 if result.status == "ok" else 503)
    if result.status != "ok":
        response["Retry-After"] = str(config.retry_after)
    return response


non_atomic_for_every_database(health)


def _is_staff(request: HttpRequest) -> bool:
    """Whether a staff user is logged in: asked only once the probe succeeded.

    With Django's session and auth middleware, ``request.user`` reads the
    session and the user from the database, through the pool: before the
    probe, any request with a session cookie would wait for a database that
    is down or stalled, past ``probe_timeout``. A failure means "not staff".
    """
    try:
        user = getattr(request, "user", None)
        return bool(user is not None and getattr(user, "is_staff", False))
    except DatabaseError:
        return False


def _token_access(request: HttpRequest, config: HealthSettings) -> str:
    """DETAILS for the right bearer token, DENIED for a wrong one, else PUBLIC."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":  # RFC 7235: schemes are case-insensitive
        return PUBLIC
    if config.token and hmac.compare_digest(
        _digest(_raw(credentials.strip())),
        _digest(config.token.encode("utf-8", "surrogatepass")),
    ):
        return DETAILS
    return DENIED


def _digest(token: bytes) -> bytes:
    # Equal lengths: compare_digest's timing then says nothing of the length.
    return hashlib.sha256(token).digest()


def _raw(header_value: str) -> bytes:
    """The bytes a client sent (compare_digest refuses non-ASCII str).

    WSGI and ASGI hand header values over decoded as latin-1; Django's test
    client may pass any text.
    """
    try:
        return header_value.encode("latin-1")
    except UnicodeEncodeError:
        return header_value.encode("utf-8", "surrogatepass")
