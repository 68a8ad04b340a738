"""Every error selecto_pool raises, in one place.

They subclass Django's ``OperationalError`` so that code already catching
database errors around the ORM keeps working with the pool; the timeout and
closed-pool errors also subclass psycopg_pool's, as raised by Django's native
pool, so code written for that keeps working too. Configuration mistakes raise
Django's ``ImproperlyConfigured`` instead.
"""

from __future__ import annotations

import psycopg_pool
from django.core.exceptions import ImproperlyConfigured
from django.core.signing import BadSignature
from django.db.utils import InterfaceError, OperationalError

__all__ = [
    "CheckoutTimeout",
    "ConnectionInterrupted",
    "ConnectionReturned",
    "ControlMessageRejected",
    "IncompatibleVersion",
    "PoolClosed",
    "PoolError",
    "PoolStartError",
    "ProbeTimeout",
]


class PoolError(OperationalError):
    """Base class of the pool's own errors."""


class CheckoutTimeout(PoolError, psycopg_pool.PoolTimeout):
    """No connection became free within ``checkout_timeout``."""


class PoolClosed(PoolError, psycopg_pool.PoolClosed):
    """The pool was stopped, or is draining, and hands out no connections."""


class PoolStartError(PoolError):
    """``start_pool`` could not open its connections in time."""


class IncompatibleVersion(ImproperlyConfigured):
    """An installed psycopg, psycopg_pool or Django lacks a name selecto_pool uses."""


class ProbeTimeout(PoolError):
    """``/health/db``'s ``SELECT 1`` got no answer within ``probe_timeout``."""


class ConnectionInterrupted(PoolError):
    """An async MySQL connection whose query was cancelled while it ran."""


class ConnectionReturned(PoolError, InterfaceError):
    """An async MySQL connection used after it was given back (its session
    may be another task's by then)."""


class ControlMessageRejected(BadSignature):
    """A control-channel message that is not signed, fresh and well-formed."""
