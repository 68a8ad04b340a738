"""``/health/db`` through Django's test client: status, details, metrics."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import OperationalError, connections
from django.test import Client, RequestFactory, override_settings
from django.utils.functional import SimpleLazyObject
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from selecto_pool import PoolClosed, execute, get_pool
from selecto_pool.views import health

from .support.clients import wait_for
from .support.postgres import spare_server

TOKEN = "a-long-enough-health-token"
SECRETS = [
    connections["default"].settings_dict["PASSWORD"],
    spare_server().password,
]


def get(client: Client, path: str = "/health/db", **headers: Any) -> Any:
    response = client.get(path, headers=headers)
    body = response.content.decode()
    for secret in SECRETS:
        assert secret not in body
        assert secret not in str(response.headers)
    return response


@pytest.fixture
def client(transactional_db: None) -> Client:
    return Client()


@override_settings(SELECTO_POOL_HEALTH={"token": TOKEN})
def test_public_callers_see_the_status_only(client: Client) -> None:
    response = get(client)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]
    # Other schemes are not ours (a proxy's Basic auth): the status only.
    basic = get(client, Authorization="Basic dXNlcjpwYXNzd29yZA==")
    assert basic.json() == {"status": "ok"}


@override_settings(SELECTO_POOL_HEALTH={"token": TOKEN})
def test_token_holders_see_latency_and_pool_stats(client: Client) -> None:
    body = get(client, Authorization=f"Bearer {TOKEN}").json()
    assert body["status"] == "ok" and body["database"] == "default"
    assert body["probe_ms"] > 0
    assert body["pool"]["name"] == "default" and body["pool"]["checkouts"] >= 1


def test_staff_users_see_details(transactional_db: None) -> None:
    request = RequestFactory().get("/health/db")
    request.user = SimpleNamespace(is_staff=True)  # type: ignore[attr-defined]
    body = json.loads(health(request).content)
    assert body["pool"]["pool_size"] == 4


@override_settings(SELECTO_POOL_HEALTH={"database": "spare", "probe_timeout": 0.5})
def test_a_session_is_read_only_once_the_probe_succeeded(
    transactional_db: None,
) -> None:
    """Telling a staff user apart reads the session and the user, from the
    database: with Django's session and auth middleware, any request with a
    session cookie (a well-formed one is enough) did so before probing,
    waiting a checkout_timeout for a database that is down (then 500), or
    for ever on a stalled network, and queueing for connections in a flood."""
    looked_up: list[str] = []

    def session_user() -> Any:
        looked_up.append("user")
        execute("spare", "SELECT true")  # what a session lookup waits for
        return SimpleNamespace(is_staff=True)

    request = RequestFactory().get("/health/db")
    request.user = SimpleLazyObject(session_user)  # type: ignore[attr-defined]
    server = spare_server()
    server.stop()
    try:
        started = time.monotonic()
        response = health(request)
        elapsed = time.monotonic() - started
    finally:
        server.start()
    assert response.status_code == 503
    assert json.loads(response.content) == {"status": "unavailable"}
    assert elapsed < 0.5 + 1.0 and looked_up == []


def test_a_session_lookup_that_fails_leaves_the_caller_public(
    transactional_db: None,
) -> None:
    def broken_session() -> Any:
        raise OperationalError("the session table is unreachable")

    request = RequestFactory().get("/health/db")
    request.user = SimpleLazyObject(broken_session)  # type: ignore[attr-defined]
    response = health(request)
    assert response.status_code == 200
    assert json.loads(response.content) == {"status": "ok"}


@override_settings(SELECTO_POOL_HEALTH={"database": "spare", "probe_timeout": 0.5})
def test_503_within_the_probe_timeout_when_the_server_is_down(client: Client) -> None:
    assert get(client).status_code == 200
    server = spare_server()
    server.stop()
    try:
        started = time.monotonic()
        response = get(client)
        elapsed = time.monotonic() - started
    finally:
        server.start()
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable"}
    assert response["Retry-After"] == "5"
    # Within probe_timeout, up to 1 s later on a loaded machine; not after the
    # alias's checkout_timeout or connection_timeout (5 s each).
    assert elapsed < 0.5 + 1.0
    deadline = time.monotonic() + 10
    while get(client).status_code != 200:
        assert time.monotonic() < deadline, "healthy again once the server is up"
        time.sleep(0.1)


# A probe would queue behind the waiting client for probe_timeout (5 s here).
@override_settings(
    SELECTO_POOL_HEALTH={
        "database": "tiny",
        "max_waiting": 1,
        "token": TOKEN,
        "probe_timeout": 5,
    }
)
def test_503_when_the_pool_is_saturated(client: Client) -> None:
    pool = get_pool("tiny")
    held = [pool.getconn(), pool.getconn()]

    def wait_for_a_connection() -> None:
        # Served as soon as the test gives the held connections back.
        pool.putconn(pool.getconn(timeout=10))

    waiter = threading.Thread(target=wait_for_a_connection)
    waiter.start()
    try:
        wait_for(lambda: pool.stats().waiting >= 1, timeout=5)
        started = time.monotonic()
        response = get(client, Authorization=f"Bearer {TOKEN}")
        # Answered from the pool's stats alone: well within the probe_timeout
        # a probe would wait, even on a loaded machine.
        assert time.monotonic() - started < 2, "a saturated pool isn't probed"
    finally:
        for conn in held:
            pool.putconn(conn)
        waiter.join()
    assert response.status_code == 503
    assert response.json()["status"] == "saturated"
    assert response.json()["pool"]["waiting"] == 1
    assert get(client).status_code == 200


@override_settings(SELECTO_POOL_HEALTH={"token": TOKEN})
def test_openmetrics_for_token_holders_only(client: Client) -> None:
    assert get(client, "/health/db?format=openmetrics").status_code == 403
    response = get(
        client, "/health/db?format=openmetrics", Authorization=f"Bearer {TOKEN}"
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    families = {
        family.name: family
        for family in text_string_to_metric_families(response.content.decode())
    }
    [up] = families["selecto_pool_up"].samples
    assert up.labels["alias"] == "default" and up.value == 1
    assert families["selecto_pool_checkouts"].type == "counter"


WRONG_TOKENS = [
    "Bearer not-the-token-at-all",
    "Bearer " + TOKEN + "x",
    "Bearer jeton-très-secret-ünïcødé",  # compare_digest refused such str
    "Bearer \u2603\u2603\u2603\u2603",
    "Bearer",
    "bearer   ",
]


@pytest.mark.parametrize("header", WRONG_TOKENS)
@pytest.mark.parametrize("path", ["/health/db", "/health/db?format=openmetrics"])
@override_settings(SELECTO_POOL_HEALTH={"token": TOKEN})
def test_a_wrong_bearer_token_is_refused(
    client: Client, header: str, path: str
) -> None:
    response = get(client, path, Authorization=header)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert "pool" not in response.content.decode()


def test_a_bearer_token_without_a_configured_token_is_refused(client: Client) -> None:
    response = get(client, Authorization=f"Bearer {TOKEN}")
    assert response.status_code == 401


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
@override_settings(SELECTO_POOL_HEALTH={"token": TOKEN})
def test_the_bearer_scheme_is_case_insensitive(client: Client, scheme: str) -> None:
    body = get(client, Authorization=f"{scheme} {TOKEN}").json()
    assert body["pool"]["name"] == "default"


@override_settings(SELECTO_POOL_HEALTH={"token": "jeton-très-secret-ünïcødé"})
def test_a_non_ascii_token_as_sent_over_http(transactional_db: None) -> None:
    """WSGI hands header bytes over as latin-1 text: the token's UTF-8 bytes."""
    sent = "jeton-très-secret-ünïcødé".encode().decode("latin-1")
    request = RequestFactory().get("/health/db", HTTP_AUTHORIZATION=f"Bearer {sent}")
    assert json.loads(health(request).content)["pool"]["name"] == "default"


@pytest.mark.parametrize(
    "token",
    [
        "a-token-read-from-a-file\n",  # open(...).read() keeps the newline
        " a-token-with-spaces-around ",
        "a-token-with\x00-a-nul-byte",
        "a-token-with\r\n-a-line-break",
    ],
)
def test_a_token_no_client_can_send_is_a_configuration_error(token: str) -> None:
    """HTTP trims spaces around a header's value and carries no control
    characters: such a token would make every caller 401, silently."""
    from django.core.exceptions import ImproperlyConfigured

    from selecto_pool._config.health import health_settings

    with (
        override_settings(SELECTO_POOL_HEALTH={"token": token}),
        pytest.raises(ImproperlyConfigured) as info,
    ):
        health_settings()
    message = str(info.value)
    assert "['token']" in message and "printable" in message
    assert token.strip() not in message, "the token is never echoed"


@override_settings(SELECTO_POOL_HEALTH={"database": "tiny", "token": TOKEN})
def test_a_pool_closed_by_hand_is_unavailable_not_an_error(client: Client) -> None:
    """``get_pool(alias).close()`` rather than ``stop_pool(alias)``: the pool
    stays the alias's (as Django's native pool does) and refuses to open
    again; the check says so instead of failing with psycopg_pool's error."""
    get_pool("tiny").close()
    try:
        response = get(client, Authorization=f"Bearer {TOKEN}")
        assert response.status_code == 503
        assert response.json()["error"] == "PoolClosed"
        with pytest.raises(PoolClosed, match="stop_pool"):
            get_pool("tiny")
    finally:
        connections["tiny"].close_pool()
