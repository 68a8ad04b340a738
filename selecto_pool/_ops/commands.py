"""What ``poolstats`` and ``clearcache`` share: which aliases, and asking them."""

from __future__ import annotations

import math
import os
import socket
from argparse import ArgumentTypeError
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError, CommandParser
from django.db import connections

from .._process import control_client, registry
from ..backend import engines

#: What the commands say about a MySQL alias (docs/operations.md).
MYSQL_NOTE = (
    "DATABASES[{alias!r}] is a MySQL database, which has no LISTEN/NOTIFY: "
    "other processes can't be asked, only this process's pool is shown. Each "
    "process serves its own pool's figures at /health/db?format=openmetrics."
)
MYSQL_CLEAR_NOTE = (
    "DATABASES[{alias!r}] is a MySQL database: its connections prepare "
    "nothing, there is nothing to clear."
)


def add_common_arguments(parser: CommandParser) -> None:
    parser.add_argument(
        "--database",
        choices=tuple(connections),
        help="Only this database alias (default: every selecto_pool alias).",
    )
    parser.add_argument(
        "--local",
        action="store_true",
        help="Only the pools of this process, without asking the others.",
    )
    parser.add_argument("--json", action="store_true", help="Print JSON.")
    parser.add_argument(
        "--timeout",
        type=_timeout,
        default=2.0,
        help="Seconds to wait for running processes to answer (default 2, "
        f"at most {MAX_TIMEOUT:g}).",
    )


#: The longest ``--timeout``: a process that doesn't answer within it never
#: will (the command waits only for those listed as running).
MAX_TIMEOUT = 300.0


def _timeout(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    # NaN fails both; inf would wait for good on a process that can't answer.
    if not 0 < seconds <= MAX_TIMEOUT:
        raise ArgumentTypeError(
            f"{value!r} is invalid: expected seconds > 0, at most {MAX_TIMEOUT:g}"
        )
    return seconds


def pooled_aliases(database: str | None) -> list[str]:
    """The aliases using selecto_pool with pooling on (or ``database`` alone)."""
    aliases = [database] if database else list(connections)
    wrappers = {alias: connections[alias] for alias in aliases}
    chosen = [
        alias
        for alias, wrapper in wrappers.items()
        if engines.is_selecto(wrapper) and wrapper.pool_options.enabled  # type: ignore[attr-defined]
    ]
    if database and not chosen:
        raise CommandError(
            f"database {database!r} does not use selecto_pool.backend or "
            "selecto_pool.backend.mysql with pooling on"
        )
    return chosen


def local_only(alias: str) -> bool:
    """Whether only this process can answer for ``alias`` (MySQL)."""
    return engines.is_mysql(connections[alias])


def ask(alias: str, operation: str, timeout: float) -> control_client.Gathered:
    """Ask every process with a pool for ``alias`` (over the alias's database).

    A MySQL alias is answered by this process alone (see ``MYSQL_NOTE``).
    """
    if local_only(alias):
        return _this_process(alias, operation)
    wrapper = connections[alias]
    params: dict[str, Any] = wrapper.get_connection_params()
    try:
        return control_client.gather(params, operation, alias=alias, timeout=timeout)
    except ImproperlyConfigured:
        raise  # e.g. no SECRET_KEY to sign with: Django's own message says so
    except Exception as exc:
        # Name the failure, not the connection parameters (they hold secrets).
        raise CommandError(
            f"cannot reach database {alias!r}: {type(exc).__name__}: {exc}"
        ) from None


def rejected_note(rejected: int) -> str:
    """What to tell about replies that could not be verified (stderr)."""
    return (
        f"Ignored {rejected} reply(ies) that could not be verified: not signed "
        "with this project's SECRET_KEY for this request (forged, or broken)."
    )


def _this_process(alias: str, operation: str) -> control_client.Gathered:
    gathered = control_client.Gathered()
    pool = registry.get(alias)
    if pool is not None:
        answer: dict[str, Any] = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "alias": alias,
        }
        if operation == "stats":
            answer["stats"] = pool.stats().as_dict()
        else:
            answer["cleared"] = pool.clear_prepared()
        gathered.answers.append(answer)
    return gathered
