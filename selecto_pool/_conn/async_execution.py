"""The statement decisions of ``execution``, run on an async connection.

``execution.plan()`` decides (prepared when hot, the stock way for what the
server can't type, a savepoint guard, recovery from a schema change) and
does no I/O; ``execution.run()`` performs its steps on a sync connection,
``run()`` here awaits them on an ``AsyncConnection``. Nothing is decided
twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import psycopg

from .execution import SERVER_SIDE, STOCK, plan
from .own_statements import arun_own


class AsyncAttempt(NamedTuple):
    """One execute() on an async connection: ``execution.Attempt``, awaited."""

    signature: int
    #: Bound server-side; takes psycopg's ``prepare`` argument.
    server_side: Callable[[bool | None], Awaitable[object]]
    #: Bound client-side, as Django's default cursor binds.
    stock: Callable[[], Awaitable[object]]


async def run(
    conn: psycopg.AsyncConnection[Any], attempt: AsyncAttempt, prepare: bool | None
) -> None:
    """Run ``attempt`` as ``execution.run()`` runs a sync one."""
    steps = plan(conn, attempt.signature, prepare)
    failure: psycopg.Error | None = None
    while True:
        try:
            step = steps.send(None) if failure is None else steps.throw(failure)
        except StopIteration:
            return
        failure = None
        try:
            if step.action == SERVER_SIDE:
                await attempt.server_side(step.prepare)
            elif step.action == STOCK:
                await attempt.stock()
            else:
                await arun_own(conn, step.command)
        except psycopg.Error as exc:
            failure = exc
