"""Answering ``poolstats`` and ``clearcache`` from every process, over LISTEN/NOTIFY.

``manage.py poolstats`` runs in a process of its own, whose pools are empty;
what operators want to see are the pools of their web and worker processes,
perhaps on several hosts. Each process with an ORM pool therefore keeps one
extra connection LISTENing on ``selecto_pool_control`` (the *responder*); a
command NOTIFYs a signed request there and gathers the signed answers
(``control_client``). PostgreSQL is the only infrastructure needed.

Any role that can connect may NOTIFY that channel, so the responder answers
only what ``control_messages`` accepts (signed with the project's
``SECRET_KEY``, fresh, never seen before), drops the rest with a log line
at most once a minute, runs at most one ``clear`` per ``CLEAR_INTERVAL``,
and stops listening for the rest of a second in which more than
``MAX_MESSAGES_PER_SECOND`` arrived. Nothing a message
does can end its thread: an error is counted and the next message handled;
a broken connection is replaced.

The responder's ``application_name`` (``selecto_pool:ctl:<pid>:<alias>``)
lets the commands list every process that *should* answer, from
``pg_stat_activity``, so that one that does not is reported, not waited for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import psycopg

from .._pool.pool import SelectoPool
from .._pool.psycopg_common import TCP_KEEPALIVE_DEFAULTS
from ..errors import ControlMessageRejected
from . import control_messages as messages
from . import direct, registry

logger = logging.getLogger("selecto_pool.control")

CHANNEL = messages.CHANNEL
APPLICATION_PREFIX = "selecto_pool:ctl:"
#: At most one clear per this many seconds; requests meanwhile share the next.
CLEAR_INTERVAL = 1.0
#: Messages looked at per second, at most: beyond, the responder stops
#: listening until the next second (see _sit_out_flood).
MAX_MESSAGES_PER_SECOND = 1000
#: Dropped messages and failed requests are logged at most this often.
LOG_EVERY = 60.0
# Clears waiting for their turn; more are dropped (a loop of clearcache?).
_MAX_PENDING_CLEARS = 32
COUNTERS = ("requests", "rejected", "errors", "clears", "restarts")

# alias -> its running responder, for the metrics.
_live: dict[str, Responder] = {}


def counters() -> dict[str, dict[str, int]]:
    """The counters of each running responder of this process, by alias."""
    return {alias: responder.counters() for alias, responder in dict(_live).items()}


def reconnect_delay(failures: int) -> float:
    """Seconds before connecting again after ``failures`` failed sessions."""
    return float(min(0.5 * 2 ** max(failures - 1, 0), 10.0))


class Responder:
    """Answers ``stats`` and ``clear`` requests for one pool of this process."""

    def __init__(
        self, pool: SelectoPool, alias: str, connect_kwargs: Mapping[str, Any]
    ):
        self.pool = pool
        self.alias = alias
        self._kwargs = {
            **TCP_KEEPALIVE_DEFAULTS,
            **connect_kwargs,
            "autocommit": True,
            # Its statements are not the application's: not through the
            # cursor class the ENGINE chose, which may count them
            # (selecto_pool.backend.prometheus).
            "cursor_factory": psycopg.ClientCursor,
            # PostgreSQL truncates application_name to 63 bytes.
            "application_name": f"{APPLICATION_PREFIX}{os.getpid()}:{alias}"[:63],
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"selecto-pool-control-{alias}", daemon=True
        )
        # Written by the thread only; read by anyone (whole dict values).
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._replays = messages.ReplayGuard()
        self._pending_clears: list[messages.Request] = []
        self._next_clear = 0.0
        self._log_gates = {"rejected": _Gate(), "errors": _Gate(), "flood": _Gate()}
        # Whether the last session got as far as LISTEN (then retry soon).
        self._listened = False
        # stop() writes here to wake the thread from its wait.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)

    def start(self) -> None:
        # A forked child's responders are its own, not the parent's.
        registry.on_fork_in_child(_live.clear)
        _live[self.alias] = self
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if _live.get(self.alias) is self:
            del _live[self.alias]
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def counters(self) -> dict[str, int]:
        return dict(self._counts)

    # -- the thread: sessions, supervised ---------------------------------------
    def _run(self) -> None:
        """One session after another until stopped: nothing ends the thread."""
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    self._session()
                except psycopg.Error as exc:
                    logger.debug("pool %r control channel: %s", self.alias, exc)
                except Exception:
                    logger.exception("pool %r control channel failed", self.alias)
                if self._stop.is_set():
                    return
                self._counts["restarts"] += 1
                failures = 1 if self._listened else failures + 1
                self._stop.wait(self._reconnect_delay(failures))
        finally:
            self._wake_r.close()
            self._wake_w.close()

    def _reconnect_delay(self, failures: int) -> float:
        """While the server refuses logins, the pool's backoff decides."""
        outage = self.pool.outage
        if outage.refusing:
            return max(outage.retry_delay(), reconnect_delay(1))
        return reconnect_delay(failures)

    def _session(self) -> None:
        """Connect, LISTEN, answer until stopped or the connection breaks."""
        self._listened = False
        # Through the pool's connection class: its attempts share the pool's
        # login backoff and password masking (a wrong password makes one
        # failed login per backoff step for the pool and this together).
        with (
            self.pool.connection_class.connect(**self._kwargs) as conn,
            selectors.DefaultSelector() as idle,
        ):
            conn.execute(f"LISTEN {CHANNEL}")
            self._listened = True
            budget = _Budget(MAX_MESSAGES_PER_SECOND)
            idle.register(conn.pgconn.socket, selectors.EVENT_READ)
            idle.register(self._wake_r, selectors.EVENT_READ)
            while not self._stop.is_set():
                # What has arrived (notifies() holds the connection's lock:
                # collect, then answer).
                received = list(conn.notifies(timeout=0))
                if not received:
                    # Until the server writes, stop() wakes us or a clear is
                    # due: no polling, so an idle responder costs no CPU.
                    idle.select(self._wait())
                for index, notify in enumerate(received):
                    if budget.exceeded():
                        self._counts["rejected"] += len(received) - index
                        self._sit_out_flood(conn, budget)
                        return  # the connection is closed: a new session
                    with self._contained(conn):
                        self._handle(conn, notify)
                with self._contained(conn):
                    self._clear_if_due(conn)

    def _sit_out_flood(self, conn: psycopg.Connection[Any], budget: _Budget) -> None:
        """Over MAX_MESSAGES_PER_SECOND: stop listening for the rest of the second.

        A listener that lags holds PostgreSQL's notification queue, which the
        whole server shares; one that doesn't listen holds nothing, and spends
        nothing on the flood. The connection is closed rather than told to
        UNLISTEN: the server answers an UNLISTEN only after every notification
        already queued for this session (a flood sent in one transaction can
        be hundreds of MB), which psycopg would read and keep in memory.
        Closed, they are dropped unread; the next session listens from the
        queue's end. Requests sent meanwhile are lost: the commands report
        this process as silent.
        """
        conn.close()
        if (held := self._log_gates["flood"].due()) is not None:
            logger.warning(
                "pool %r control channel: flooded with over %d messages a second, "
                "not listening for the rest of this one (%d more floods since "
                "the last report)",
                self.alias,
                MAX_MESSAGES_PER_SECOND,
                held,
            )
        self._stop.wait(budget.rest())

    @contextlib.contextmanager
    def _contained(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        """Count and log what goes wrong with one request; carry on."""
        try:
            yield
        except Exception as exc:
            if conn.closed or conn.broken:
                raise  # the session's end: reconnect
            self._counts["errors"] += 1
            if (held := self._log_gates["errors"].due()) is not None:
                logger.warning(
                    "pool %r control channel: a request failed (%s: %s); "
                    "%d more failed since the last report",
                    self.alias,
                    type(exc).__name__,
                    exc,
                    held,
                )

    # -- one message -------------------------------------------------------------
    def _handle(self, conn: psycopg.Connection[Any], notify: psycopg.Notify) -> None:
        now = time.time()
        try:
            request = messages.open_request(notify.payload, now)
            if request.alias not in (None, self.alias):
                return  # for another alias's responder
            self._replays.admit(request, now)
            if request.operation == "clear" and (
                len(self._pending_clears) >= _MAX_PENDING_CLEARS
            ):
                raise ControlMessageRejected("too many clear requests waiting")
        except ControlMessageRejected as exc:
            self._counts["rejected"] += 1
            if (held := self._log_gates["rejected"].due()) is not None:
                logger.warning(
                    "pool %r control channel: dropped a message from backend "
                    "pid %d: %s; %d more dropped since the last report",
                    self.alias,
                    notify.pid,
                    exc,
                    held,
                )
            return
        self._counts["requests"] += 1
        if request.operation == "stats":
            answer: dict[str, Any] = {"stats": self.pool.stats().as_dict()}
            if self._reports_direct_pools():
                answer |= _listed(
                    {"name": label, "stats": stats.as_dict()}
                    for label, stats in direct.stats()
                )
            self._reply(conn, request, answer)
        else:
            self._pending_clears.append(request)
            self._clear_if_due(conn)

    def _clear_if_due(self, conn: psycopg.Connection[Any]) -> None:
        """One clear for every request since the last, once CLEAR_INTERVAL passed."""
        if not self._pending_clears or time.monotonic() < self._next_clear:
            return
        pending, self._pending_clears = self._pending_clears, []
        self._next_clear = time.monotonic() + CLEAR_INTERVAL
        self._counts["clears"] += 1
        cleared = self.pool.clear_prepared()
        answer: dict[str, Any] = {"cleared": cleared}
        if self._reports_direct_pools():
            answer |= _listed(
                {"name": label, "cleared": count} for label, count in direct.clear_all()
            )
        for request in pending:
            if request.wants_reply:
                self._reply(conn, request, answer)

    def _reports_direct_pools(self) -> bool:
        """Whether this responder answers for the process's direct pools too:
        one of them does, the first alias's, so that each shows once."""
        return min(_live, default=None) == self.alias

    def _reply(
        self,
        conn: psycopg.Connection[Any],
        request: messages.Request,
        answer: dict[str, Any],
    ) -> None:
        if not request.wants_reply:
            return
        answer = {**answer, "direct": list(answer.get("direct", []))}
        answer.update(
            host=socket.gethostname(),
            pid=os.getpid(),
            alias=self.alias,
            backend=conn.info.backend_pid,
        )
        while True:
            try:
                payload = messages.sign_reply(request, answer)
                break
            except ValueError:
                # Over NOTIFY's 8000 bytes: the direct pools that don't fit
                # are counted, not listed.
                if not answer.get("direct"):
                    raise
                answer["direct"].pop()
                answer["direct_omitted"] = answer.get("direct_omitted", 0) + 1
        conn.execute("SELECT pg_notify(%s, %s)", [request.reply_channel, payload])

    def _wait(self) -> float | None:
        """How long to sleep without news: until a pending clear is due."""
        if not self._pending_clears:
            return None
        return max(self._next_clear - time.monotonic(), 0.0)


def _listed(entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A reply's ``direct`` entries: as many as a reply may list, the rest
    counted in ``direct_omitted``."""
    listed = list(entries)
    return {
        "direct": listed[: messages.MAX_DIRECT],
        "direct_omitted": max(len(listed) - messages.MAX_DIRECT, 0),
    }


class _Gate:
    """Open at most once per ``LOG_EVERY`` seconds; counts who was held back."""

    def __init__(self) -> None:
        self._next = 0.0
        self._held = 0

    def due(self) -> int | None:
        """How many were held back since it last opened, or None if shut."""
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return None
        held, self._held = self._held, 0
        self._next = now + LOG_EVERY
        return held


class _Budget:
    """Counts messages per second; tells when there were more than ``rate``."""

    def __init__(self, rate: int):
        self._rate = rate
        self._window = time.monotonic()
        self._spent = 0

    def exceeded(self) -> bool:
        """Count one message; True if it is over this second's ``rate``."""
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._window, self._spent = now, 0
        self._spent += 1
        return self._spent > self._rate

    def rest(self) -> float:
        """Seconds left of the current second."""
        return max(self._window + 1.0 - time.monotonic(), 0.0)
