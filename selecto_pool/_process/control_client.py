"""Asking the responders of every process: ``poolstats``, ``clearcache``, migrate.

A request goes out signed on ``selecto_pool_control``; the answers come back
on a channel only holders of the key can name (``control_messages``). A
reply counts only if it is signed for this request and was sent by the
backend it claims as its own (PostgreSQL tells who sent each notification);
anything else is counted as rejected and ignored.

Who should answer comes from ``pg_stat_activity``: the responders'
``application_name``, of backends logged in as the same role as this
connection (the role of the alias's settings, which the responders use too),
so that another role cannot pose as a silent process.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from ..errors import ControlMessageRejected
from . import control_messages as messages
from .control import APPLICATION_PREFIX

_CLIENT_NAME = "selecto_pool:cli"


@dataclass
class Gathered:
    """The answers to one request, and who should have answered but did not."""

    answers: list[dict[str, Any]] = field(default_factory=list)
    silent: list[dict[str, Any]] = field(default_factory=list)
    #: Replies ignored because they could not be verified (forged, broken).
    rejected: int = 0


def gather(
    connect_kwargs: Mapping[str, Any],
    operation: str,
    alias: str | None = None,
    timeout: float = 2.0,
) -> Gathered:
    """Send ``operation`` to every responder on this database; collect answers."""
    request = messages.new_request(operation, alias, wants_reply=True)
    payload = messages.sign_request(request)
    gathered = Gathered()
    with _connect(connect_kwargs) as conn:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(request.reply_channel)))
        expected = _responders(conn, alias)
        conn.execute("SELECT pg_notify(%s, %s)", [messages.CHANNEL, payload])
        answered: set[tuple[int, str]] = set()
        deadline = time.monotonic() + timeout
        while expected and (remaining := deadline - time.monotonic()) > 0:
            for notify in conn.notifies(timeout=remaining, stop_after=1):
                try:
                    answer = messages.open_reply(notify.payload, request, notify.pid)
                except ControlMessageRejected:
                    gathered.rejected += 1
                    continue
                if (notify.pid, answer["alias"]) in answered:
                    gathered.rejected += 1  # the same reply twice
                    continue
                answered.add((notify.pid, answer["alias"]))
                gathered.answers.append(answer)
                expected.pop(notify.pid, None)
        gathered.silent = list(expected.values())
    gathered.answers.sort(key=lambda answer: (answer["host"], answer["pid"]))
    return gathered


def broadcast(connect_kwargs: Mapping[str, Any], operation: str) -> None:
    """Send ``operation`` to every responder on this database; don't wait."""
    request = messages.new_request(operation, None, wants_reply=False)
    payload = messages.sign_request(request)
    with _connect(connect_kwargs) as conn:
        conn.execute("SELECT pg_notify(%s, %s)", [messages.CHANNEL, payload])


def _connect(connect_kwargs: Mapping[str, Any]) -> psycopg.Connection[Any]:
    kwargs = {
        **connect_kwargs,
        "autocommit": True,
        "application_name": _CLIENT_NAME,
        # Not the cursor class the ENGINE chose, which may count the
        # application's statements (selecto_pool.backend.prometheus).
        "cursor_factory": psycopg.ClientCursor,
    }
    return psycopg.connect(**kwargs)


def _responders(conn: psycopg.Connection[Any], alias: str | None) -> dict[int, Any]:
    """The responders of this role on this database, keyed by backend pid."""
    rows = conn.execute(
        "SELECT pid, application_name, host(client_addr) FROM pg_stat_activity "
        "WHERE datname = current_database() AND usename = session_user "
        "AND left(application_name, %s) = %s",
        [len(APPLICATION_PREFIX), APPLICATION_PREFIX],
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
