"""Asking every running process about its pool, over LISTEN/NOTIFY.

``manage.py poolstats`` runs in a process of its own, whose pools are empty;
what operators want to see are the pools of their web and worker processes,
perhaps on several hosts. Each process with an ORM pool therefore keeps one
extra connection LISTENing on ``selecto_pool_control`` (the *responder*); a
command NOTIFYs a request there with a private reply channel and gathers the
answers. PostgreSQL is the only infrastructure needed.

The responder's ``application_name`` (``selecto_pool:ctl:<pid>:<alias>``)
lets the command list every process that *should* answer, from
``pg_stat_activity``, so that one that does not is reported, not waited for.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from .._pool.pool import TCP_KEEPALIVE_DEFAULTS, SelectoPool

logger = logging.getLogger("selecto_pool.control")

CHANNEL = "selecto_pool_control"
APPLICATION_PREFIX = "selecto_pool:ctl:"
_REPLY_CHANNEL = re.compile(r"^selecto_pool_reply_[0-9a-f]{32}$")
# How often the responder looks up from LISTEN to see whether it must stop.
_POLL_SECONDS = 0.25


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
            # PostgreSQL truncates application_name to 63 bytes.
            "application_name": f"{APPLICATION_PREFIX}{os.getpid()}:{alias}"[:63],
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"selecto-pool-control-{alias}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(**self._kwargs) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    backoff = 0.5
                    self._serve(conn)
            except psycopg.Error as exc:
                logger.debug("pool %r control channel: %s", self.alias, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        while not self._stop.is_set():
            # notifies() holds the connection's lock: collect, then answer.
            requests = list(conn.notifies(timeout=_POLL_SECONDS, stop_after=1))
            for request in requests:
                self._answer(conn, request.payload)

    def _answer(self, conn: psycopg.Connection[Any], payload: str) -> None:
        try:
            request = json.loads(payload)
            reply_to = request["reply"]
            operation = request["op"]
        except (ValueError, KeyError, TypeError):
            return
        if not isinstance(reply_to, str) or not _REPLY_CHANNEL.match(reply_to):
            return
        if request.get("alias") not in (None, self.alias):
            return
        answer: dict[str, Any] = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "alias": self.alias,
            "control_backend": conn.info.backend_pid,
        }
        if operation == "stats":
            answer["stats"] = self.pool.stats().as_dict()
        elif operation == "clear":
            answer["cleared"] = self.pool.clear_prepared()
        else:
            return
        conn.execute("SELECT pg_notify(%s, %s)", [reply_to, json.dumps(answer)])


@dataclass
class Gathered:
    """The answers to one request, and who should have answered but did not."""

    answers: list[dict[str, Any]] = field(default_factory=list)
    silent: list[dict[str, Any]] = field(default_factory=list)


def gather(
    connect_kwargs: Mapping[str, Any],
    operation: str,
    alias: str | None = None,
    timeout: float = 2.0,
) -> Gathered:
    """Send ``operation`` to every responder on this database; collect answers."""
    reply_to = f"selecto_pool_reply_{uuid.uuid4().hex}"
    kwargs = {
        **connect_kwargs,
        "autocommit": True,
        "application_name": "selecto_pool:cli",
    }
    with psycopg.connect(**kwargs) as conn:
        conn.execute(f"LISTEN {reply_to}")
        expected = _responders(conn, alias)
        request = {"op": operation, "reply": reply_to, "alias": alias}
        conn.execute("SELECT pg_notify(%s, %s)", [CHANNEL, json.dumps(request)])
        gathered = Gathered()
        deadline = time.monotonic() + timeout
        while expected and (remaining := deadline - time.monotonic()) > 0:
            for notify in conn.notifies(timeout=remaining, stop_after=1):
                answer = json.loads(notify.payload)
                if expected.pop(answer.get("control_backend"), None) is not None:
                    gathered.answers.append(answer)
        gathered.silent = list(expected.values())
    gathered.answers.sort(key=lambda answer: (answer["host"], answer["pid"]))
    return gathered


def broadcast(connect_kwargs: Mapping[str, Any], operation: str) -> None:
    """Send ``operation`` to every responder on this database; don't wait."""
    kwargs = {
        **connect_kwargs,
        "autocommit": True,
        "application_name": "selecto_pool:cli",
    }
    with psycopg.connect(**kwargs) as conn:
        request = {"op": operation, "reply": "selecto_pool_reply_" + "0" * 32}
        conn.execute("SELECT pg_notify(%s, %s)", [CHANNEL, json.dumps(request)])


def _responders(conn: psycopg.Connection[Any], alias: str | None) -> dict[int, Any]:
    """The responders connected to this database, keyed by their backend pid."""
    rows = conn.execute(
        "SELECT pid, application_name, host(client_addr) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name LIKE %s",
        [APPLICATION_PREFIX + "%"],
    ).fetchall()
    responders = {}
    for backend, application_name, client in rows:
        pid, _, responder_alias = application_name[len(APPLICATION_PREFIX) :].partition(
            ":"
        )
        if alias is None or responder_alias == alias:
            responders[backend] = {
                "host": client or "local",
                "pid": int(pid) if pid.isdigit() else None,
                "alias": responder_alias,
            }
    return responders
