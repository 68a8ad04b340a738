"""``/health/db`` under a stalled network and a flood of checks.

The answer must come within ``probe_timeout`` (plus a small margin) even when
the network holds every packet, and health checks must never take the
connections the application needs nor grow its pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client, override_settings

from selecto_pool import execute, get_pool

from .support.clients import run_threads
from .support.database import conninfo_of
from .support.hostile import extra_alias
from .support.proxy import Proxy

TOKEN = "a-long-enough-health-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def proxy(transactional_db: None) -> Iterator[Proxy]:
    info = conninfo_of("default")
    with Proxy(int(info["port"]), info["host"]) as running:
        yield running


def health(**headers: str) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    response = Client().get("/health/db", headers=headers)
    return response.status_code, response.json(), time.monotonic() - started


@pytest.mark.slow
def test_answers_within_probe_timeout_on_a_stalled_network(proxy: Proxy) -> None:
    options = {"pool": {"pool_size": 2, "max_overflow": 0, "control": False}}
    settings = {"database": "stalled", "probe_timeout": 1.0, "token": TOKEN}
    with (
        extra_alias("stalled", PORT=str(proxy.port), OPTIONS=options),
        override_settings(SELECTO_POOL_HEALTH=settings),
    ):
        assert health()[0] == 200
        pool = get_pool("stalled")
        pool.wait(timeout=5)
        checkouts = pool.stats().checkouts
        proxy.latency = 6.0  # every packet held for 6 s, both ways
        try:
            answers: list[Any] = [None] * 5
            probes = [
                threading.Thread(
                    target=lambda i=i: answers.__setitem__(i, health(**AUTH))
                )
                for i in range(5)
            ]
            for probe in probes:
                probe.start()
            time.sleep(0.3)
            # The application still gets a connection meanwhile.
            in_use_during = pool.stats().in_use
            conn = pool.getconn(timeout=0.5)
            pool.putconn(conn)
            for probe in probes:
                probe.join(timeout=15)
        finally:
            proxy.latency = 0.0
        used = pool.stats().checkouts - checkouts
    assert in_use_during == 1, "one probe in flight, the others wait for it"
    for status, body, elapsed in answers:
        assert status == 503 and body["status"] == "unavailable"
        assert body["error"] == "ProbeTimeout"
        assert elapsed < 1.0 + 0.5
    assert used == 2  # the probe and the application's checkout
    slowest = max(elapsed for _, _, elapsed in answers)
    print(f"\nstalled network: 5 checks answered 503 in at most {slowest:.3f} s")


def test_the_reset_option_adds_nothing_to_a_probe(proxy: Proxy) -> None:
    """The probe's connection ran ``SELECT 1`` and nothing else: with
    ``reset: "session"`` it was reset on its way back all the same, inside
    the probe, so on a slow network the answer (and ``probe_ms``) took the
    reset's round trips too, past ``probe_timeout``."""
    options = {
        "pool": {"pool_size": 1, "max_overflow": 0, "control": False},
        "reset": "session",
    }
    settings = {"database": "slow", "probe_timeout": 1.0, "token": TOKEN}
    with (
        extra_alias("slow", PORT=str(proxy.port), OPTIONS=options),
        override_settings(SELECTO_POOL_HEALTH=settings),
    ):
        get_pool("slow").wait(timeout=5)
        proxy.latency = 0.3  # a SELECT 1 takes 0.6 s, within probe_timeout
        try:
            status, body, elapsed = health(**AUTH)
        finally:
            proxy.latency = 0.0
    assert status == 200
    assert body["probe_ms"] < 1000.0
    assert elapsed < 1.0 + 0.2 + 0.3  # the margin, and a loaded machine's


def test_a_flood_of_checks_neither_grows_the_pool_nor_fails_the_app(
    transactional_db: None,
) -> None:
    options = {"pool": {"pool_size": 4, "max_overflow": 4, "checkout_timeout": 2}}
    with (
        extra_alias("probed", OPTIONS=options) as alias,
        override_settings(SELECTO_POOL_HEALTH={"database": alias}),
    ):
        pool = get_pool(alias)
        pool.wait(timeout=5)
        stop = threading.Event()
        app_errors: list[Exception] = []
        app_queries = [0, 0]
        peak = [0]

        def app(number: int) -> None:
            while not stop.is_set():
                try:
                    # The direct API, on the ORM's pool (pytest-django
                    # refuses the ORM on an alias added at run time).
                    execute(pool, "SELECT pg_sleep(0.002)")
                    app_queries[number] += 1
                except Exception as exc:
                    app_errors.append(exc)

        def watch() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], pool.stats().connections)
                time.sleep(0.002)

        background = [threading.Thread(target=app, args=(n,)) for n in range(2)]
        background.append(threading.Thread(target=watch))
        for thread in background:
            thread.start()
        try:
            statuses = run_threads(50, lambda _: [health()[0] for _ in range(4)])
        finally:
            stop.set()
            for thread in background:
                thread.join(timeout=10)
        connections_after = pool.stats().connections
    assert not app_errors
    assert all(app_queries)
    assert {status for answers in statuses for status in answers} == {200}
    assert peak[0] == 4 and connections_after == 4


def test_checks_never_queue_for_or_open_a_connection(transactional_db: None) -> None:
    """Every connection busy: the check says so rather than growing the pool."""
    options = {"pool": {"pool_size": 2, "max_overflow": 2, "control": False}}
    settings = {"database": "busy", "probe_timeout": 0.3, "token": TOKEN}
    with (
        extra_alias("busy", OPTIONS=options),
        override_settings(SELECTO_POOL_HEALTH=settings),
    ):
        pool = get_pool("busy")
        pool.wait(timeout=5)
        held = [pool.getconn(), pool.getconn()]
        try:
            status, body, elapsed = health(**AUTH)
            connections_then = pool.stats().connections
        finally:
            for conn in held:
                pool.putconn(conn)
        assert health()[0] == 200
    assert status == 503 and body["status"] == "saturated"
    assert elapsed < 0.3 + 0.5
    assert connections_then == 2
