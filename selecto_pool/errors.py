"""Every error selecto_pool raises, in one place.

They subclass Django's ``OperationalError`` so that code already catching
database errors around the ORM keeps working with the pool. Configuration
mistakes raise Django's ``ImproperlyConfigured`` instead.
"""

from __future__ import annotations

from django.db.utils import OperationalError

__all__ = ["CheckoutTimeout", "PoolClosed", "PoolError", "PoolStartError"]


class PoolError(OperationalError):
    """Base class of the pool's own errors."""


class CheckoutTimeout(PoolError):
    """No connection became free within ``checkout_timeout``."""


class PoolClosed(PoolError):
    """The pool was stopped, or is draining, and hands out no connections."""


class PoolStartError(PoolError):
    """``start_pool`` could not open its connections in time."""
