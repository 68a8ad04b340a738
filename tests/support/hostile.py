"""What the trust-boundary tests share: a role with LOGIN and nothing else,
aliases added at run time (a proxied server, a pool of a given size), and a
way to wait until this process's control responder answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from io import StringIO
from typing import Any

import psycopg
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

from selecto_pool import get_pool
from selecto_pool._process import registry

from .database import conninfo_of


@contextlib.contextmanager
def low_privilege_role(
    admin: psycopg.Connection[Any], alias: str
) -> Iterator[dict[str, Any]]:
    """Connection arguments of a new role that may log in, nothing more.

    Like every role, it may connect to ``alias``'s database (PUBLIC has
    CONNECT) and LISTEN/NOTIFY there.
    """
    name = f"intruder_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    try:
        yield {**conninfo_of(alias), "user": name, "password": password}
    finally:
        admin.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE usename = %s",
            [name],
        )
        admin.execute(f"DROP ROLE {name}")


def notify(conn: psycopg.Connection[Any], payload: str, channel: str = "") -> None:
    conn.execute(
        "SELECT pg_notify(%s, %s)", [channel or "selecto_pool_control", payload]
    )


def leaked_reply_channel(request_payload: str) -> str:
    """The reply channel of a request, as if its secret had leaked.

    Before the fix, requests named it in clear; now it is derived from the
    nonce and the key, which only the project's processes hold.
    """
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(json.loads(request_payload)["reply"])
    from selecto_pool._process import control_messages

    return control_messages.open_request(request_payload, time.time()).reply_channel


def poolstats(alias: str, *args: str) -> dict[str, Any]:
    """``manage.py poolstats --json`` for ``alias``; stderr is dropped.

    The report also when no process answered (the command then fails, after
    printing it).
    """
    out = StringIO()
    with contextlib.suppress(CommandError):
        call_command(
            "poolstats",
            "--json",
            "--database",
            alias,
            *args,
            stdout=out,
            stderr=StringIO(),
        )
    return dict(json.loads(out.getvalue()))


def wait_until_answering(alias: str, timeout: float = 10.0) -> dict[str, Any]:
    """This process's row in ``poolstats`` for ``alias``, once it answers."""
    get_pool(alias)  # its responder starts with the pool
    deadline = time.monotonic() + timeout
    while True:
        rows = poolstats(alias, "--timeout", "1")["processes"]
        mine = [r for r in rows if r["pid"] == os.getpid() and r["status"] == "ok"]
        if mine:
            return mine[0]
        assert time.monotonic() < deadline, f"the {alias!r} responder is silent"
        time.sleep(0.1)


@contextlib.contextmanager
def extra_alias(alias: str, **overrides: Any) -> Iterator[str]:
    """A DATABASES entry added at run time (e.g. through a proxy's port).

    ``overrides`` replace keys of the ``default`` alias's settings (HOST,
    PORT, OPTIONS...). The alias's pool is closed and the alias forgotten at
    the end.
    """
    base = {**connections["default"].settings_dict, **overrides}
    connections.settings[alias] = connections.configure_settings({"default": base})[
        "default"
    ]
    try:
        yield alias
    finally:
        pool = registry.discard(alias)
        if pool is not None:
            pool.close(timeout=1.0)
        connections.settings.pop(alias, None)
        with contextlib.suppress(AttributeError):
            delattr(connections._connections, alias)
