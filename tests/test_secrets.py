"""No part of a password reaches an error or a log, however it was written.

A ``DATABASE_URL`` with an unencoded ``@`` in its password works through
django-environ (urllib splits at the last ``@``), so it must work through
``start_pool()`` too; libpq alone splits at the first one and then reports
a host named after the rest of the password. Every test connects for real
and looks for any 4-character piece of the password in the exception, its
whole ``__cause__``/``__context__`` chain and every log record.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import environ
import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured

import selecto_pool as sp
from selecto_pool import CheckoutTimeout, PoolStartError
from testproject.pgserver import LocalPostgres, free_port

from .support.postgres import login_role

ROLE = "leaky"
PASSWORD = "Xy7@secretpart@ZZq9"
WRONG = "Wq4@hushhush@Kp2"


def pieces(password: str) -> set[str]:
    """Every run of 4 characters of ``password``, and some longer ones."""
    runs = {password[i : i + 4] for i in range(len(password) - 3)}
    runs |= {part for part in password.split("@") if len(part) >= 4}
    return runs | {password}


def chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        yield from chain(exc.__cause__)
        exc = exc.__context__


def assert_nothing_leaks(
    password: str,
    exc: BaseException | None,
    caplog: pytest.LogCaptureFixture,
    loggers: tuple[str, ...] = ("selecto_pool", "psycopg"),
) -> None:
    texts = [str(error) for error in chain(exc)]
    texts += [repr(error.args) for error in chain(exc)]
    for record in caplog.records:
        if not record.name.startswith(loggers):
            continue
        texts.append(record.getMessage())
        if record.exc_info:
            texts.append("".join(traceback.format_exception(*record.exc_info)))
    leaked = {piece for piece in pieces(password) for text in texts if piece in text}
    assert not leaked, (leaked, [t for t in texts if any(p in t for p in leaked)])


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    for name in ("selecto_pool", "psycopg"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


@pytest.fixture
def server(spare_server: LocalPostgres) -> Iterator[LocalPostgres]:
    with login_role(spare_server, ROLE, PASSWORD):
        yield spare_server


def url(password: str, port: int, scheme: str = "postgres") -> str:
    # Written by hand, not encoded: the '@' of the password stays as it is.
    return f"{scheme}://{ROLE}:{password}@127.0.0.1:{port}/postgres"


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_an_unencoded_at_in_the_password_works_as_with_django_environ(
    server: LocalPostgres, logs: pytest.LogCaptureFixture, scheme: str
) -> None:
    given = url(PASSWORD, server.port, scheme)
    parsed = environ.Env.db_url_config(given)
    assert parsed["PASSWORD"] == PASSWORD  # what the ORM gets from the URL
    pool = sp.start_pool(given, pool_size=1, max_overflow=0)
    try:
        assert sp.execute(pool, "SELECT current_user").rows == [(ROLE,)]
    finally:
        sp.stop_pool(pool, timeout=1)
    assert_nothing_leaks(PASSWORD, None, logs)


@pytest.mark.parametrize(
    "where",
    [
        "refusing",  # the server answers: wrong password
        "absent",  # nothing listens on the port
    ],
)
def test_a_failing_url_with_an_at_in_the_password_leaks_no_part_of_it(
    server: LocalPostgres, logs: pytest.LogCaptureFixture, where: str
) -> None:
    port = server.port if where == "refusing" else free_port()
    with pytest.raises(PoolStartError) as info:
        sp.start_pool(url(WRONG, port), pool_size=1, connection_timeout=2)
    message = str(info.value)
    if where == "refusing":
        assert f'password authentication failed for user "{ROLE}"' in message
    else:
        assert "127.0.0.1" in message and "refused" in message
    assert_nothing_leaks(WRONG, info.value, logs)


@pytest.mark.parametrize(
    "written",
    [
        f"postgres://{ROLE}:Wq4/hush@hush@127.0.0.1:1/postgres",
        f"postgres://{ROLE}:1234/hushhush@127.0.0.1:1/postgres",
    ],
)
def test_a_url_no_parser_can_read_is_refused_without_echoing_it(
    logs: pytest.LogCaptureFixture, written: str
) -> None:
    password = written.split(":")[2].rpartition("@")[0]
    with pytest.raises(ImproperlyConfigured, match="percent-encode") as info:
        sp.start_pool(written)
    assert_nothing_leaks(password, info.value, logs)


def test_a_password_piece_in_another_parameter_is_masked(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    """libpq names the socket it tried: the host, a directory here, holds a
    piece of the password (as a mis-split URL would put it there).

    psycopg's own DEBUG records name each host it tries, as it was given:
    nothing is done to them (a URL is no longer mis-split, see above); the
    errors, and the pool's and psycopg_pool's records of them, are masked.
    """
    directory = tmp_path / "secretpart"
    directory.mkdir()
    config: dict[str, Any] = {
        "host": str(directory),
        "user": ROLE,
        "password": PASSWORD,
        "dbname": "postgres",
    }
    with pytest.raises(PoolStartError) as info:
        sp.start_pool(config, pool_size=1)
    assert "No such file or directory" in str(info.value)
    assert_nothing_leaks(PASSWORD, info.value, logs, ("selecto_pool", "psycopg.pool"))


def test_the_pool_s_own_attempts_and_timeouts_leak_nothing(
    server: LocalPostgres, logs: pytest.LogCaptureFixture
) -> None:
    """After the password changes on the server, the pool's background
    attempts fail, and so do checkouts: their errors and logs stay clean."""
    pool = sp.start_pool(url(PASSWORD, server.port), pool_size=1, max_overflow=0)
    try:
        with psycopg.connect(**server.conninfo(), autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {ROLE} PASSWORD 'something-else'")
            conn.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE usename = %s",
                [ROLE],
            )
        with pytest.raises(CheckoutTimeout) as info:
            for _ in range(20):
                sp.execute(pool, "SELECT 1")
    finally:
        sp.stop_pool(pool, timeout=1)
    assert "password authentication failed" in str(info.value)
    assert_nothing_leaks(PASSWORD, info.value, logs)
