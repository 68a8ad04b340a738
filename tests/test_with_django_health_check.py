"""django-health-check's ``/ht/`` with selecto_pool's check (its v4 API).

The check runs the ``/health/db`` probe: on a saturated pool it answers
within ``probe_timeout``, where django-health-check's stock database check
queues for a connection until ``checkout_timeout``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections
from django.test import Client, override_settings

from selecto_pool import get_pool

from .support.clients import wait_for
from .support.postgres import spare_server

URLS = "tests.support.ecosystem_urls"
SECRETS = [
    connections["default"].settings_dict["PASSWORD"],
    spare_server().password,
]
TOKEN = "a-long-enough-health-token"


def ht(path: str = "/ht/") -> tuple[int, dict[str, str], float]:
    """``/ht/``'s status, JSON report and time taken; never a secret in it."""
    started = time.monotonic()
    response = Client().get(path, headers={"Accept": "application/json"})
    elapsed = time.monotonic() - started
    text = response.content.decode() + str(response.headers)
    for secret in SECRETS:
        assert secret not in text
    return response.status_code, response.json(), elapsed


@pytest.fixture
def saturated(transactional_db: None) -> Iterator[str]:
    """The "single" alias, its only connection checked out, a client waiting."""
    pool = get_pool("single")
    held = pool.getconn(timeout=5)
    waiter = threading.Thread(target=lambda: pool.putconn(pool.getconn(10)))
    waiter.start()
    try:
        wait_for(lambda: pool.stats().waiting >= 1, timeout=5)
        yield "single"
    finally:
        pool.putconn(held)
        waiter.join()


@override_settings(ROOT_URLCONF=URLS)
def test_ht_reports_the_pooled_database(transactional_db: None) -> None:
    status, report, _ = ht()
    assert (status, report) == (200, {"PooledDatabase(alias='default')": "OK"})
    response = Client().get("/ht/?format=openmetrics")
    assert (
        'django_health_check_status{check="PooledDatabase",alias="default"} 1'
        in response.content.decode()
    )


@pytest.mark.slow
# The stock check connects the ORM to "single" (in a thread).
@pytest.mark.django_db(transaction=True, databases=["default", "single"])
@override_settings(ROOT_URLCONF=URLS, SELECTO_POOL_HEALTH={"probe_timeout": 0.5})
def test_a_saturated_pool_fails_within_probe_timeout_not_checkout_timeout(
    saturated: str,
) -> None:
    status, report, elapsed = ht("/ht/single/")
    assert status == 500
    assert report == {
        "PooledDatabase(alias='single')": "Unavailable: pool 'single' is "
        "saturated: 1 of 1 connection(s) in use, 1 client(s) waiting"
    }
    # probe_timeout 0.5 s (+ 0.2 s at most), with room for a loaded machine.
    assert elapsed < 0.5 + 1.0
    # django-health-check's own database check queues for the connection
    # behind the waiting client, until checkout_timeout (3 s).
    status, report, stock_elapsed = ht("/ht/single/stock/")
    assert status == 500 and stock_elapsed >= 3.0
    print(f"\nsaturated pool: /ht/ {elapsed:.2f} s, stock check {stock_elapsed:.2f} s")


@override_settings(
    ROOT_URLCONF=URLS, SELECTO_POOL_HEALTH={"probe_timeout": 5, "max_waiting": 1}
)
def test_a_saturated_pool_is_reported_from_the_stats_without_a_probe(
    saturated: str,
) -> None:
    status, report, elapsed = ht("/ht/single/")
    assert (
        status == 500
        and "is saturated" in report[f"PooledDatabase(alias={saturated!r})"]
    )
    assert elapsed < 2.0, "max_waiting clients are waiting: no probe is made"


@pytest.mark.slow
@override_settings(ROOT_URLCONF=URLS, SELECTO_POOL_HEALTH={"probe_timeout": 0.5})
def test_unavailable_within_probe_timeout_when_the_server_is_down(
    transactional_db: None,
) -> None:
    assert ht("/ht/spare/")[:2] == (200, {"PooledDatabase(alias='spare')": "OK"})
    server = spare_server()
    server.stop()
    try:
        status, report, elapsed = ht("/ht/spare/")
    finally:
        server.start()
    assert status == 500
    [message] = report.values()
    assert message.startswith(
        "Unavailable: no answer from the database through pool 'spare' ("
    )
    # Not after the alias's checkout_timeout or connection_timeout (5 s each).
    assert elapsed < 0.5 + 1.0
    deadline = time.monotonic() + 10
    while ht("/ht/spare/")[0] != 200:
        assert time.monotonic() < deadline, "healthy again once the server is up"
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("path", "health", "message"),
    [
        ("/ht/missing/", {}, "Unavailable: Database alias does not exist"),
        (
            "/ht/unpooled/",
            {},
            "Unavailable: DATABASES['unpooled'] has no selecto_pool pool "
            "(ImproperlyConfigured): see manage.py check",
        ),
        (
            "/ht/",
            {"token": SECRETS[0] + "x" * 4096},
            "Unavailable: SELECTO_POOL_HEALTH is invalid: see manage.py check "
            "(selecto_pool.E003)",
        ),
    ],
)
def test_misconfigurations_are_named_without_secrets(
    transactional_db: None, path: str, health: dict[str, Any], message: str
) -> None:
    with override_settings(ROOT_URLCONF=URLS, SELECTO_POOL_HEALTH=health):
        status, report, _ = ht(path)
    assert status == 500 and list(report.values()) == [message]
