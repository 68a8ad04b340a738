"""The pool recovers by itself: terminated backends, a restarted server."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import environ
import pytest
from django.db import OperationalError, connections

from selecto_pool import get_pool
from selecto_pool.backend.base import DatabaseWrapper
from testproject.library.models import Author
from testproject.pgserver import LocalPostgres

from .support.clients import run_threads
from .support.database import Observer, wrapper_for_settings


@pytest.mark.django_db(transaction=True)
def test_terminated_backends_are_replaced_without_errors(observer: Observer) -> None:
    Author.objects.create(name="before")
    connections["default"].close()
    pool = get_pool("default")
    pool.wait(timeout=5)  # all pool_size connections open
    pooled = observer.connections_of("selecto-default")
    assert len(pooled) == pool.stats().connections >= pool.options.pool_size

    observer.terminate(pooled)

    def query(_: int) -> int:
        return Author.objects.count()

    assert run_threads(20, query) == [1] * 20
    for _ in range(20):
        assert Author.objects.count() == 1
        connections["default"].close()
    assert not set(observer.connections_of("selecto-default")) & set(pooled)
    assert pool.stats().connections_replaced >= len(pooled)


def backend_pid(wrapper: DatabaseWrapper) -> int:
    """One ORM-level query and the end of the request, as Django does it."""
    try:
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]
    finally:
        wrapper.close()


@pytest.fixture
def restartable(
    spare_server: LocalPostgres, django_db_blocker: Any
) -> Iterator[DatabaseWrapper]:
    settings_dict = {
        **environ.Env.db_url_config(spare_server.url),
        "ENGINE": "selecto_pool.backend",
        "OPTIONS": {"pool": {"pool_size": 2, "max_overflow": 1, "checkout_timeout": 1}},
    }
    wrapper = wrapper_for_settings(settings_dict, "restartable")
    with django_db_blocker.unblock():
        yield wrapper
        wrapper.close()
        wrapper.close_pool()


def test_queries_succeed_again_after_a_server_restart(
    spare_server: LocalPostgres,
    restartable: DatabaseWrapper,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="selecto_pool")
    before = backend_pid(restartable)
    spare_server.stop()

    started = time.monotonic()
    with pytest.raises(OperationalError):
        backend_pid(restartable)
    # checkout_timeout (1 s) and up to 2 s for the CPU on a loaded machine;
    # not connection_timeout (5 s) or for good.
    assert time.monotonic() - started < 3, "a dead server must fail fast, not hang"

    spare_server.start()
    up = time.monotonic()
    deadline = up + 15
    while True:
        try:
            after = backend_pid(restartable)
            break
        except OperationalError:
            assert time.monotonic() < deadline, "the pool did not recover"
    # Measured: a few milliseconds; the pool probes an unreachable server every
    # 0.5 s, where psycopg_pool's own retries come 1, 2, 4... s apart. The rest
    # is for waiting for the CPU on a loaded machine.
    assert time.monotonic() - up < 2
    assert after != before
    for _ in range(10):
        backend_pid(restartable)
    # Operators see the outage and the recovery, and never the password.
    assert "cannot connect" in caplog.text
    assert "connected again" in caplog.text
    assert spare_server.password not in caplog.text
