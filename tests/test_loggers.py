"""Each component logs under its own child of ``selecto_pool``, so operators
can route or silence one (``selecto_pool.pool``, ``.statements``,
``.control``, ``.health``) without the others."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connections
from django.test import Client, override_settings

import selecto_pool as sp
from testproject.pgserver import free_port

from .support.database import conninfo_of
from .support.hostile import extra_alias, notify, wait_until_answering


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger="selecto_pool")
    yield caplog


def records_of(caplog: pytest.LogCaptureFixture, needle: str) -> set[str]:
    """The loggers of the records whose message holds ``needle``."""
    return {r.name for r in caplog.records if needle in r.getMessage()}


def test_a_refused_login_goes_to_the_pool_logger(
    transactional_db: None, logs: pytest.LogCaptureFixture
) -> None:
    # The server answers and refuses: the database does not exist.
    refused = {**conninfo_of("default"), "dbname": "no_such_database"}
    with pytest.raises(sp.PoolStartError):
        sp.start_pool(refused, name="refused")
    assert records_of(logs, "pool 'refused' cannot connect") == {"selecto_pool.pool"}
    assert conninfo_of("default")["password"] not in logs.text


def test_an_unverified_control_message_goes_to_the_control_logger(
    transactional_db: None, logs: pytest.LogCaptureFixture
) -> None:
    from selecto_pool._process import control

    options = {"pool": {"pool_size": 1, "max_overflow": 0}}
    with extra_alias("logged", OPTIONS=options) as alias:
        wait_until_answering(alias)
        with psycopg.connect(**conninfo_of(alias), autocommit=True) as conn:
            notify(conn, "not signed")
        deadline = time.monotonic() + 5
        while control.counters()[alias]["rejected"] < 1:
            assert time.monotonic() < deadline, "the message was not seen"
            time.sleep(0.05)
    assert records_of(logs, "dropped a message") == {"selecto_pool.control"}


@pytest.mark.django_db(databases=["cached"], transaction=True)
def test_fallbacks_and_invalidations_go_to_the_statements_logger(
    logs: pytest.LogCaptureFixture,
) -> None:
    with connections["cached"].cursor() as cursor:
        # The server can't type $1 IS NULL: the stock way, from now on.
        cursor.execute("SELECT %s IS NULL AS unknown", [None])
        for _ in range(3):  # prepared from the second run (threshold 2)
            cursor.execute("SELECT id FROM library_author WHERE id = %s", [1])
        cursor.execute("DEALLOCATE ALL")  # the cache forgets its statements
    assert records_of(logs, "runs the stock way") == {"selecto_pool.statements"}
    assert records_of(logs, "forgets its") == {"selecto_pool.statements"}


@pytest.mark.django_db(transaction=True)
def test_a_failed_health_probe_goes_to_the_health_logger(
    logs: pytest.LogCaptureFixture,
) -> None:
    options: dict[str, Any] = {
        "pool": {"pool_size": 1, "max_overflow": 0, "control": False}
    }
    # Nothing listens on that port: the probe finds no connection.
    with (
        extra_alias("down", PORT=str(free_port()), OPTIONS=options) as alias,
        override_settings(
            SELECTO_POOL_HEALTH={"database": alias, "probe_timeout": 0.3}
        ),
    ):
        for _ in range(3):
            assert Client().get("/health/db").status_code == 503
    failed = [r for r in logs.records if "health probe of 'down'" in r.getMessage()]
    assert {r.name for r in failed} == {"selecto_pool.health"}
    # Logged once as a warning when it started failing, then at DEBUG.
    assert [r.levelname for r in failed] == ["WARNING", "DEBUG", "DEBUG"]
