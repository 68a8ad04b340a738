"""Operating MySQL pools: /health/db, metrics, poolstats, clearcache, checks."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.db import connections
from django.test import Client, override_settings

from selecto_pool import get_pool
from selecto_pool._ops.schema_changes import invalidate_statement_caches
from testproject.library.models import Author
from testproject.mariaserver import LocalMariaDB

TOKEN = "a-long-enough-health-token"


def checks_about(alias: str, **kwargs: Any) -> dict[str, str]:
    return {
        message.id: message.msg
        for message in run_checks(**kwargs)
        if message.id and alias in message.msg
    }


@override_settings(SELECTO_POOL_HEALTH={"database": "mysql", "token": TOKEN})
def test_health_view_probes_the_mysql_pool(
    mysql_alias: Callable[..., str], mariadb_server: LocalMariaDB
) -> None:
    mysql_alias(pool_size=2, max_overflow=0)
    client = Client()
    assert client.get("/health/db").json() == {"status": "ok"}
    response = client.get("/health/db", headers={"Authorization": f"Bearer {TOKEN}"})
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "mysql"
    assert body["probe_ms"] > 0 and body["pool"]["name"] == "mysql"
    assert body["pool"]["in_use"] == 0 and body["pool"]["checkouts"] >= 1
    metrics = client.get(
        "/health/db?format=openmetrics",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).content.decode()
    for sample in ("selecto_pool_up", "selecto_pool_connections"):
        value = "1" if sample == "selecto_pool_up" else "2"
        line = rf'^{sample}\{{alias="mysql",[^}}]*\}} {value}$'
        assert re.search(line, metrics, re.MULTILINE), sample
    for text in (response.content.decode(), metrics):
        assert mariadb_server.password not in text


def test_poolstats_shows_this_processs_mysql_pool(
    mysql_alias: Callable[..., str],
) -> None:
    alias = mysql_alias(pool_size=2, max_overflow=1)
    Author.objects.using(alias).count()
    connections[alias].close()
    out, err = StringIO(), StringIO()
    call_command("poolstats", database=alias, json=True, stdout=out, stderr=err)
    [row] = json.loads(out.getvalue())["processes"]
    assert (row["alias"], row["status"], row["pool_size"]) == ("mysql", "ok", 2)
    assert row["checkouts"] >= 2 and row["cache_statements"] == 0
    assert "no LISTEN/NOTIFY" in err.getvalue()
    out = StringIO()
    call_command("poolstats", database=alias, stdout=out, stderr=StringIO())
    assert "TOTAL (1 process)" in out.getvalue()


def test_clearcache_says_there_is_nothing_to_clear(
    mysql_alias: Callable[..., str],
) -> None:
    alias = mysql_alias(pool_size=1, max_overflow=0)
    get_pool(alias)
    out, err = StringIO(), StringIO()
    call_command("clearcache", database=alias, json=True, stdout=out, stderr=err)
    assert json.loads(out.getvalue()) == {
        "processes": 1,
        "connections": 0,
        "silent": [],
        "rejected_replies": 0,
    }
    assert "prepare nothing" in err.getvalue()


def test_migrate_asks_nobody_over_mysql(
    mysql_alias: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    alias = mysql_alias(pool_size=1, max_overflow=0)
    get_pool(alias)
    with caplog.at_level(logging.WARNING, "selecto_pool"):
        invalidate_statement_caches(using=alias, plan=object())
    assert "could not ask other processes" not in caplog.text


def test_capacity_check_asks_the_mysql_server(
    mysql_alias: Callable[..., str],
) -> None:
    alias = mysql_alias(pool_size=2, max_overflow=1)
    # The test server allows 300 connections; MySQL pools have no control
    # connection: 100 processes x 3 fit, 101 don't.
    with override_settings(SELECTO_POOL_EXPECTED_PROCESSES=100):
        assert "selecto_pool.W001" not in checks_about(alias, databases=[alias])
    with override_settings(SELECTO_POOL_EXPECTED_PROCESSES=101):
        warning = checks_about(alias, databases=[alias])["selecto_pool.W001"]
    assert warning == (
        f"DATABASES[{alias!r}]: 101 process(es) x 3 connections (pool_size 2 + "
        "max_overflow 1 + control 0) = 303, above the 300 the server allows."
    )


@pytest.mark.parametrize(
    ("pool", "check_id", "words"),
    [
        ({"prepare_threshold": 5}, "selecto_pool.E001", "prepare nothing"),
        ({"control": True}, "selecto_pool.E001", "LISTEN/NOTIFY"),
        ({"pool_size": -1}, "selecto_pool.E001", "integer >= 0"),
    ],
)
def test_invalid_mysql_options_are_reported_by_checks(
    mysql_alias: Callable[..., str], pool: dict[str, Any], check_id: str, words: str
) -> None:
    alias = mysql_alias(pool_size=1)
    connections.settings[alias]["OPTIONS"]["pool"] = pool
    assert words in checks_about(alias)[check_id]
