"""``SELECTO_POOL_HEALTH``: how ``/health/db`` probes and when it says 503.

Read on every request (not at import) so that ``override_settings`` works.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .values import shown


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
    "token": (
        (str, type(None)),
        "a string of 16+ printable characters without spaces around it, or None",
    ),
}

#: The largest value of each key (characters for ``token``), named in the
#: error a larger one gets; why each: docs/operations.md#selecto_pool_health.
MAXIMA: dict[str, int | float] = {
    # A load balancer gives up on a health check long before.
    "probe_timeout": 300.0,
    "max_waiting": 1_000_000,
    # The longest checkout_timeout, a day.
    "max_wait_ms": 86_400_000.0,
    "retry_after": 86_400,
    "token": 4_096,
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
            text = "'***'" if key == "token" else shown(value)
            at_most = f", at most {int(MAXIMA[key])}" if key in MAXIMA else ""
            raise ImproperlyConfigured(
                f"SELECTO_POOL_HEALTH[{key!r}] = {text} is invalid: "
                f"expected {allowed}{at_most}."
            )
    return HealthSettings(**raw)


def _valid(key: str, value: Any, kind: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool) or not isinstance(value, kind):
        return False
    maximum = MAXIMA.get(key, 0)
    if key == "token":
        # A header value has no control characters, and HTTP trims the spaces
        # around it: a token with either could never match.
        return value is None or (
            isinstance(value, str)
            and 16 <= len(value) <= maximum
            and value.isprintable()
            and value == value.strip()
        )
    if isinstance(value, (int, float)):
        # NaN fails both comparisons; inf and huge ints fail the second.
        return 0 < value <= maximum
    return True
