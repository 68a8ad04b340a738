"""``SELECTO_POOL_HEALTH``: how ``/health/db`` probes and when it says 503.

Read on every request (not at import) so that ``override_settings`` works.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class HealthSettings:
    #: The alias whose pool is probed.
    database: str = "default"
    #: Seconds the probe may wait for a connection before answering 503.
    probe_timeout: float = 1.0
    #: Saturated (503) when this many clients wait for a connection.
    max_waiting: int = 10
    #: Saturated (503) when every connection is busy and the p99 checkout
    #: wait exceeds this many milliseconds.
    max_wait_ms: float = 1000.0
    #: Seconds suggested to clients in ``Retry-After`` with a 503.
    retry_after: int = 5
    #: A bearer token that unlocks details and metrics (staff users see them too).
    token: str | None = None


_RULES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "database": (str, "a database alias"),
    "probe_timeout": ((int, float), "a number of seconds > 0"),
    "max_waiting": (int, "an integer >= 1"),
    "max_wait_ms": ((int, float), "a number of milliseconds > 0"),
    "retry_after": (int, "an integer >= 1"),
    "token": ((str, type(None)), "a string of 16+ characters, or None"),
}


def health_settings() -> HealthSettings:
    """The validated ``SELECTO_POOL_HEALTH`` setting."""
    raw: Any = getattr(settings, "SELECTO_POOL_HEALTH", {})
    if not isinstance(raw, dict):
        raise ImproperlyConfigured(
            f"SELECTO_POOL_HEALTH = {raw!r} is invalid: expected a dict with keys "
            f"{', '.join(f.name for f in fields(HealthSettings))}."
        )
    for key, value in raw.items():
        if key not in _RULES:
            raise ImproperlyConfigured(
                f"SELECTO_POOL_HEALTH[{key!r}] is not a health option; allowed keys: "
                f"{', '.join(sorted(_RULES))}."
            )
        kind, allowed = _RULES[key]
        if not _valid(key, value, kind):
            shown = "'***'" if key == "token" else repr(value)
            raise ImproperlyConfigured(
                f"SELECTO_POOL_HEALTH[{key!r}] = {shown} is invalid: "
                f"expected {allowed}."
            )
    return HealthSettings(**raw)


def _valid(key: str, value: Any, kind: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool) or not isinstance(value, kind):
        return False
    if key == "token":
        return value is None or (isinstance(value, str) and len(value) >= 16)
    if isinstance(value, (int, float)):
        return value > 0
    return True
