"""The connection class a pool opens: it reports failures and paces retries.

psycopg_pool retries failed connects in the background and logs each attempt
to ``psycopg.pool``; operators watch ``selecto_pool``. A per-pool subclass of
``psycopg.Connection`` hooks ``connect()`` (the one call psycopg_pool makes)
to log the first failure of an outage, and the recovery, once each.

It also tells two kinds of failure apart, which call for opposite retries:

* **Nobody answered** (connection refused, timed out, unknown host), or the
  server said it can't take connections *yet* (57P03: starting up, shutting
  down, in recovery). No login happened, so nothing is gained by waiting:
  the pool probes every ``PROBE_INTERVAL``, which brings it back within
  half a second of a restart.
* **The server answered and refused** (wrong password 28P01; no
  ``pg_hba.conf`` entry or a role that can't log in, 28000; unknown database
  3D000; too many connections 53300...). Each attempt is a failed login in
  the server's log, and in LDAP/AD lockout counters. Attempts then back off
  exponentially from ``PROBE_INTERVAL`` to ``login_retry_max`` (15 s by
  default, PgBouncer's ``server_login_retry``), whoever makes them: until
  the next one is due, ``connect()`` fails at once without reaching the
  server. Each refused attempt is logged once.

libpq reports no SQLSTATE for a failed connection, only its message: a
server's error is printed with its severity (``FATAL:  ...``, two spaces,
in any language), libpq's own errors without one; and psycopg tells whether
the server asked for a password. MySQL's client library gives error codes:
``MYSQL_REFUSALS`` are the server's answers.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from typing import Any

import psycopg

from .redaction import connection_secrets, redacted

logger = logging.getLogger("selecto_pool.pool")

#: Seconds between two connection attempts while the server doesn't answer,
#: and the first step of the backoff when it refuses logins.
PROBE_INTERVAL = 0.5
#: The default cap of that backoff (PgBouncer's ``server_login_retry``).
LOGIN_RETRY_MAX = 15.0

# "connection to server at ... failed: FATAL:  password authentication ...".
_SERVER_ANSWERED = re.compile(r"failed: [^\s:]+:  ")
# 57P03 (cannot_connect_now), in the server's English words: the one answer
# that says "try again soon" rather than "no".
_NOT_YET = re.compile(
    r"the database system is (starting up|shutting down|in recovery mode|"
    r"not yet accepting connections|not accepting connections)"
)


#: MySQL/MariaDB server errors that refuse a login: access denied (1044,
#: 1045, 1698), unknown database (1049), too many connections (1040, 1203,
#: 1226), host blocked or not allowed (1129, 1130), old auth (1251).
MYSQL_REFUSALS = frozenset({1040, 1044, 1045, 1049, 1129, 1130, 1203, 1226, 1251, 1698})


def refused_login(exc: BaseException) -> bool:
    """Whether the server answered this connection attempt and turned it down."""
    if not isinstance(exc, psycopg.Error):
        # mysqlclient's errors carry (code, message).
        code = exc.args[0] if exc.args else None
        return isinstance(code, int) and code in MYSQL_REFUSALS
    message = str(exc)
    if _NOT_YET.search(message):
        return False
    pgconn = getattr(exc, "pgconn", None)
    if pgconn is not None and getattr(pgconn, "used_password", False):
        return True
    return _SERVER_ANSWERED.search(message) is not None


class _PoolRepeats(logging.Filter):
    """Drops psycopg_pool's "error connecting in <pool>" lines for our pools.

    psycopg_pool logs one WARNING per failed attempt, two a second while a
    server is unreachable and the pool probes it; the pool's own log says the
    same once per outage (or per backoff step), its password masked.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pool_names: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.msg == _PSYCOPG_POOL_CONNECT_ERROR
            and isinstance(record.args, tuple)
            and record.args[:1] != ()
            and record.args[0] in self.pool_names
        )


# The message psycopg_pool logs for each failed attempt (psycopg_pool/pool.py).
_PSYCOPG_POOL_CONNECT_ERROR = "error connecting in %r: %s"
_repeats: _PoolRepeats | None = None


def _quiet_psycopg_pool(pool_name: str) -> None:
    """Installed with the first pool (never at import) on ``psycopg.pool``."""
    global _repeats
    if _repeats is None:
        _repeats = _PoolRepeats()
        logging.getLogger("psycopg.pool").addFilter(_repeats)
    _repeats.pool_names.add(pool_name)


class OutageLog:
    """The connect failures of one pool: logged on edges, retries paced.

    Shared by every connection attempt of the pool (its workers, its
    reconnect probe, and whoever else connects through its connection
    class), so that the backoff holds for all of them together.
    """

    def __init__(self, pool_name: str, login_retry_max: float = LOGIN_RETRY_MAX):
        _quiet_psycopg_pool(pool_name)
        self.pool_name = pool_name
        self.login_retry_max = login_retry_max
        self.failures = 0
        #: When the current run of failures began (monotonic), and its last
        #: error's first line, for the pool's CheckoutTimeout message.
        self.since = 0.0
        self.last_error = ""
        #: Consecutive attempts the server refused; only a success resets it,
        #: so a server that vanishes and comes back refusing doesn't restart
        #: the backoff from its first step.
        self.refusals = 0
        self._refusing = False  # the last failure was a refusal
        self._next_attempt = 0.0  # monotonic; none before it while refusing
        self._lock = threading.Lock()

    @property
    def refusing(self) -> bool:
        """Whether the server refused the last attempt (the backoff is on)."""
        return self._refusing

    def retry_delay(self) -> float:
        """Seconds to wait before the next connection attempt.

        While the server refuses logins, the time left before the backoff
        allows one (0.0: now). Otherwise ``PROBE_INTERVAL``, jittered so that
        processes restarted together don't probe in step.
        """
        with self._lock:
            if self._refusing:
                return max(self._next_attempt - time.monotonic(), 0.0)
        return PROBE_INTERVAL * random.uniform(0.8, 1.0)

    def claim(self) -> float:
        """0.0 if an attempt may be made now, else the seconds to wait.

        While refusing, a granted attempt holds the others back for the
        current step, until its outcome moves the backoff on.
        """
        with self._lock:
            if not self._refusing:
                return 0.0
            now = time.monotonic()
            if self._next_attempt > now:
                return self._next_attempt - now
            self._next_attempt = now + self._step(self.refusals)
            return 0.0

    def held_back(self, wait: float) -> psycopg.OperationalError:
        """The error of an attempt the backoff did not let through."""
        return psycopg.OperationalError(
            f"pool {self.pool_name!r} waits {wait:.1f} s more before trying to "
            f"log in again; the server refused the last attempt: {self.last_error}"
        )

    def failed(
        self,
        exc: BaseException,
        conninfo: str = "",
        kwargs: dict[str, Any] | None = None,
    ) -> BaseException:
        """Record a failed attempt; the error to raise, the password masked.

        psycopg's messages may echo connection parameters (``conninfo`` and
        ``kwargs`` say which hold secrets); MySQL's name only user and host.
        """
        refused = refused_login(exc)
        error = (
            redacted(exc, *connection_secrets(conninfo, kwargs or {}))
            if isinstance(exc, psycopg.Error)
            else exc
        )
        now = time.monotonic()
        with self._lock:
            self.failures += 1
            first = self.failures == 1
            if first:
                self.since = now
            self.last_error = str(error).strip().partition("\n")[0]
            self._refusing = refused
            if refused:
                self.refusals += 1
                refusals = self.refusals
                delay = self._step(refusals)
                self._next_attempt = now + delay
        if refused:
            # At most one line per step of the backoff, however many
            # connections are missing.
            logger.warning(
                "pool %r cannot connect: the server refused attempt %d (%s); "
                "next attempt in %.1f s",
                self.pool_name,
                refusals,
                self.last_error,
                delay,
            )
        else:
            log = logger.warning if first else logger.debug
            log("pool %r cannot connect: %s", self.pool_name, error)
        return error

    def succeeded(self) -> None:
        with self._lock:
            failures, self.failures = self.failures, 0
            self.refusals = 0
            self._refusing = False
        if failures:
            logger.warning(
                "pool %r connected again after %d failed attempt(s)",
                self.pool_name,
                failures,
            )

    def _step(self, refusals: int) -> float:
        """The wait after the ``refusals``-th refusal in a row: doubling from
        ``PROBE_INTERVAL`` up to ``login_retry_max``, never shorter."""
        # The exponent is capped: 2.0 ** 1100 overflows a float.
        doubled = PROBE_INTERVAL * 2.0 ** min(max(refusals - 1, 0), 64)
        return min(doubled, self.login_retry_max) * random.uniform(1.0, 1.1)


def connection_class_for(
    pool_name: str, login_retry_max: float = LOGIN_RETRY_MAX
) -> tuple[type[psycopg.Connection[Any]], OutageLog]:
    """A ``psycopg.Connection`` subclass whose ``connect()`` logs and paces
    for the pool, and the log it keeps (read by the pool's timeout messages).
    """
    outage = OutageLog(pool_name, login_retry_max)

    class PooledConnection(psycopg.Connection[Any]):
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
            wait = outage.claim()
            if wait > 0:
                raise outage.held_back(wait)
            try:
                conn = super().connect(conninfo, **kwargs)
            except psycopg.Error as exc:
                error = outage.failed(exc, conninfo, kwargs)
            else:
                outage.succeeded()
                return conn
            # Raised here, not in the except clause: the original error, whose
            # message may hold part of the password, is not chained to it.
            raise error

    return PooledConnection, outage
