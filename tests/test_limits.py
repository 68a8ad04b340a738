"""Extreme values: every option has a maximum, and no background thread dies.

Huge but finite values used to be accepted and then crash a thread (an
interval of 1e10 s overflows ``threading``'s waits): now each option has a
documented maximum, a larger value is an ``ImproperlyConfigured`` naming the
key, the value and the range, and the pool's maintenance thread survives
whatever its jobs raise.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

import selecto_pool as sp
from selecto_pool import SelectoPool
from selecto_pool._config.health import health_settings
from selecto_pool._config.options import MAX_CONNECTIONS, MAXIMA, OPTION_NAMES
from selecto_pool._pool.maintenance import Maintainer

from .support.clients import wait_for
from .support.database import Observer, conninfo_of, wrapper_for_settings

DAY = 86_400


# -- pool options ---------------------------------------------------------------
# Options that are not numbers have no maximum.
NOT_NUMBERS = {"control", "pgbouncer", "reset", "check", "reconnect_failed"}


def test_every_numeric_option_has_a_maximum() -> None:
    assert set(MAXIMA) == OPTION_NAMES - NOT_NUMBERS


@pytest.mark.parametrize(
    ("key", "value", "at_most"),
    [
        # The values of issue #10: each one crashed a thread, or was accepted.
        ("checkout_timeout", 1e10, f"at most {DAY}"),
        ("health_check_interval", 1e10, f"at most {DAY}"),
        ("max_idle", 1e10, f"at most {30 * DAY}"),
        ("pool_size", 10**100, f"at most {MAX_CONNECTIONS}"),
        # Just above each maximum, in the spellings settings and URLs use.
        ("pool_size", MAX_CONNECTIONS + 1, f"at most {MAX_CONNECTIONS}"),
        ("max_overflow", str(MAX_CONNECTIONS + 1), f"at most {MAX_CONNECTIONS}"),
        ("connection_timeout", 3_601, "at most 3600"),
        ("checkout_timeout", f"{DAY + 1}", f"at most {DAY}"),
        ("max_lifetime", 30 * DAY + 1, f"at most {30 * DAY}"),
        ("prepared_statement_cache_size", 10_001, "at most 10000"),
        ("prepare_threshold", 1_000_001, "at most 1000000"),
        ("leak_detection_threshold", DAY + 0.5, f"at most {DAY}"),
        ("exit_timeout", 3_600.5, "at most 3600"),
        ("login_retry_max", DAY + 1, f"at most {DAY}"),
        # Numbers beyond what floats and int() can take.
        ("max_idle", 10**400, f"at most {30 * DAY}"),
        ("pool_size", "9" * 5000, f"at most {MAX_CONNECTIONS}"),
    ],
)
@pytest.mark.parametrize("where", ["pool", "flat", "start_pool"])
def test_a_value_above_the_maximum_is_named_with_the_range(
    key: str, value: Any, at_most: str, where: str
) -> None:
    settings_dict = {
        "ENGINE": "selecto_pool.backend",
        "NAME": "app",
        "OPTIONS": {"pool": {key: value}} if where == "pool" else {key: value},
    }
    with pytest.raises(ImproperlyConfigured) as info:
        if where == "start_pool":
            sp.start_pool("host=127.0.0.1 port=1", **{key: value})
        else:
            _ = wrapper_for_settings(settings_dict, "huge").pool_options
    message = str(info.value)
    assert f"[{key!r}] = " in message and at_most in message
    assert repr(value)[:40] in message
    assert len(message) < 300, "a huge value is not echoed whole"


@pytest.mark.parametrize(
    "pool",
    [
        {"pool_size": MAX_CONNECTIONS, "max_overflow": 1},
        {"min_size": 1, "max_size": MAX_CONNECTIONS + 1},
    ],
)
def test_pool_size_and_overflow_together_stay_within_max_connections(
    pool: dict[str, Any],
) -> None:
    settings_dict = {"ENGINE": "selecto_pool.backend", "OPTIONS": {"pool": pool}}
    with pytest.raises(ImproperlyConfigured, match=str(MAX_CONNECTIONS)):
        _ = wrapper_for_settings(settings_dict, "huge").pool_options


@pytest.fixture
def at_maxima(transactional_db: None) -> Iterator[SelectoPool]:
    """A pool with every time option at its maximum (and a small pool)."""
    largest = {
        key: MAXIMA[key]
        for key in (
            "connection_timeout",
            "checkout_timeout",
            "max_lifetime",
            "max_idle",
            "health_check_interval",
            "leak_detection_threshold",
            "exit_timeout",
            "login_retry_max",
            "prepare_threshold",
            "prepared_statement_cache_size",
        )
    }
    pool = sp.start_pool(
        conninfo_of("default"), name="largest", pool_size=1, max_overflow=1, **largest
    )
    yield pool
    sp.stop_pool(pool, timeout=1)


def test_the_largest_values_keep_every_thread_of_the_pool_alive(
    at_maxima: SelectoPool,
) -> None:
    threads = {"largest-scheduler", "selecto-pool-maintenance-largest"}
    assert sp.execute(at_maxima, "SELECT 1").rows == [(1,)]
    conn = sp.checkout(at_maxima, timeout=DAY)
    sp.checkin(at_maxima, conn)
    time.sleep(0.2)
    alive = {thread.name for thread in threading.enumerate() if thread.is_alive()}
    assert threads <= alive


@pytest.mark.parametrize("timeout", [1e10, float("inf"), float("nan")])
def test_a_checkout_timeout_beyond_a_day_is_a_clear_error(
    at_maxima: SelectoPool, timeout: float
) -> None:
    with pytest.raises(ValueError, match="at most 86400"):
        sp.checkout(at_maxima, timeout=timeout)
    # The pool is unharmed, and stopping it with a huge timeout returns.
    assert sp.execute(at_maxima, "SELECT 1").rows == [(1,)]
    started = time.monotonic()
    sp.stop_pool(at_maxima, timeout=1e10)
    assert time.monotonic() - started < 5


# -- SELECTO_POOL_HEALTH and SELECTO_POOL_EXPECTED_PROCESSES --------------------
@pytest.mark.parametrize(
    ("key", "value", "at_most"),
    [
        ("probe_timeout", float("inf"), "at most 300"),
        ("probe_timeout", 1e10, "at most 300"),
        ("probe_timeout", 300.5, "at most 300"),
        ("max_waiting", 10**100, "at most 1000000"),
        ("max_wait_ms", float("inf"), "at most 86400000"),
        ("retry_after", DAY + 1, f"at most {DAY}"),
        ("token", "t" * 4097, "at most 4096"),
    ],
)
def test_health_settings_have_maxima(key: str, value: Any, at_most: str) -> None:
    with override_settings(SELECTO_POOL_HEALTH={key: value}):
        with pytest.raises(ImproperlyConfigured) as info:
            health_settings()
        [error] = [m for m in run_checks() if m.id == "selecto_pool.E003"]
    for message in (str(info.value), error.msg):
        assert f"[{key!r}]" in message and at_most in message
        if key == "token":
            assert "ttttt" not in message, "the token is never echoed"
        else:
            assert repr(value)[:40] in message


def test_health_settings_at_their_maxima_are_accepted() -> None:
    largest = {
        "probe_timeout": 300,
        "max_waiting": 1_000_000,
        "max_wait_ms": 86_400_000,
        "retry_after": DAY,
        "token": "t" * 4096,
    }
    with override_settings(SELECTO_POOL_HEALTH=largest):
        assert health_settings().probe_timeout == 300


@pytest.mark.parametrize("processes", [MAX_CONNECTIONS + 1, 10**100])
def test_expected_processes_has_a_maximum(processes: int) -> None:
    with override_settings(SELECTO_POOL_EXPECTED_PROCESSES=processes):
        messages = run_checks(databases=["default"])
    [error] = [m for m in messages if m.id == "selecto_pool.E005"]
    assert f"at most {MAX_CONNECTIONS}" in error.msg


# -- the maintenance thread -----------------------------------------------------
class Flaky:
    """A weak callback of the maintainer that raises its first ``failures``
    times, as an unexpected bug in the thread's own loop would."""

    def __init__(self, method: Callable[[], None], failures: int):
        self.method = method
        self.failures = failures
        self.calls = 0

    def __call__(self) -> Callable[[], None]:
        self.calls += 1
        if self.calls <= self.failures:
            raise ZeroDivisionError("injected into the maintenance loop")
        return self.method


def test_the_maintenance_thread_survives_an_unexpected_error(
    observer: Observer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="selecto_pool")
    pool = sp.start_pool(
        {**conninfo_of("default"), "application_name": "selecto-robust"},
        name="robust",
        pool_size=2,
        max_overflow=0,
        health_check_interval=0,  # only the maintainer below sweeps
    )
    flaky = Flaky(pool.sweep_idle, failures=2)
    maintainer = Maintainer(
        "robust",
        0.05,
        None,
        sweep=flaky,
        run_task=weakref.WeakMethod(pool.run_task),
    )
    try:
        pool.wait(timeout=5)
        maintainer.start()
        wait_for(lambda: flaky.calls > 2, timeout=5)
        # It goes on sweeping: connections killed now are replaced by it,
        # without any request.
        observer.terminate(observer.connections_of("selecto-robust"))
        wait_for(lambda: pool.stats().connections_replaced >= 2, timeout=5)
        wait_for(lambda: pool.stats().idle == 2, timeout=5)
    finally:
        maintainer.stop(1)
        sp.stop_pool(pool, timeout=1)
    failures = [r for r in caplog.records if "maintenance failed" in r.getMessage()]
    assert len(failures) == 2
    assert "injected" in str(failures[0].exc_info[1])  # type: ignore[index]


def test_the_maintenance_thread_survives_an_interval_no_wait_can_take() -> None:
    """1e10 s overflows threading's waits; the thread must still probe."""
    probed = threading.Event()

    class Attempt:
        def run(self) -> None:
            probed.set()

    def run_task(task: Any) -> None:
        task.run()

    maintainer = Maintainer(
        "unwaitable",
        1e10,
        None,
        sweep=lambda: lambda: None,
        run_task=lambda: run_task,
    )
    maintainer.start()
    try:
        time.sleep(0.1)  # the thread is waiting for its first sweep
        maintainer.park(Attempt())
        assert probed.wait(3), "the maintenance thread no longer probes"
    finally:
        maintainer.stop(1)
