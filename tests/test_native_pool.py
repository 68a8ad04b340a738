"""Switching ENGINE from Django's native pool: its settings keep their meaning,
and a key nobody reads is an error at ``manage.py check``, not a timeout."""

from __future__ import annotations

import logging
import math
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from io import StringIO
from typing import Any

import environ
import psycopg_pool
import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connections
from django.db.backends.postgresql import base as postgresql
from django.test import override_settings

from selecto_pool import get_pool
from selecto_pool._pool.pool import SelectoPool
from testproject.pgserver import free_port

from .support.database import url_of, wrapper_for_settings
from .support.hostile import extra_alias
from .support.processes import ROOT, demo_environment

SECRET = "hunter2-never-printed"
# psycopg_pool's attributes that OPTIONS["pool"] sets in Django's native pool.
SIZES = (
    "min_size",
    "max_size",
    "timeout",
    "max_lifetime",
    "max_idle",
    "max_waiting",
    "num_workers",
    "reconnect_timeout",
)


@pytest.fixture
def no_control() -> Iterator[None]:
    # Pools built here are never opened; no responder connects either.
    with override_settings(SELECTO_POOL={"control": False}):
        yield


def native_pool(pool: Any, alias: str) -> psycopg_pool.ConnectionPool[Any]:
    """The pool Django's own backend builds for ``OPTIONS["pool"] = pool``."""
    settings_dict = {
        **connections["default"].settings_dict,
        "ENGINE": "django.db.backends.postgresql",
        "OPTIONS": {"pool": pool},
    }
    completed = connections.configure_settings({"default": settings_dict})["default"]
    wrapper = postgresql.DatabaseWrapper(completed, alias=alias)
    built = wrapper.pool
    assert built is not None
    wrapper.close_pool()  # never opened: this only forgets it
    return built


@pytest.mark.parametrize(
    "pool",
    [
        True,
        {"min_size": 4},
        {"max_size": 10},
        {"min_size": 2, "max_size": 6, "timeout": 3},
        {"min_size": 0, "max_size": 3},
        {"max_lifetime": 600, "max_idle": 120},
        {"max_waiting": 5, "num_workers": 2, "timeout": 0.5},
        {"reconnect_timeout": 60, "min_size": 1},
    ],
    ids=str,
)
def test_native_settings_size_the_pool_as_django_native_pool_does(
    pool: Any, no_control: None
) -> None:
    native = native_pool(pool, "native")
    with extra_alias("switched", OPTIONS={"pool": pool}) as alias:
        ours = connections[alias].pool
        assert isinstance(ours, SelectoPool)
        # The one deliberate difference: unless it is set, the pool never
        # gives a failing connection up (docs/reliability.md).
        compared = [
            size
            for size in SIZES
            if size != "reconnect_timeout" or (isinstance(pool, dict) and size in pool)
        ]
        assert {size: getattr(ours, size) for size in compared} == {
            size: getattr(native, size) for size in compared
        }
        if "reconnect_timeout" not in compared:
            assert ours.reconnect_timeout == math.inf


def resolved(options: dict[str, Any], **settings: Any) -> Any:
    url = f"postgres://app:{SECRET}@127.0.0.1:1/app"
    settings_dict = {
        **environ.Env.db_url_config(url),
        "ENGINE": "selecto_pool.backend",
        "OPTIONS": options,
        **settings,
    }
    return wrapper_for_settings(settings_dict, "configured").pool_options


@pytest.mark.parametrize(
    ("options", "sizes"),
    [
        # pool: True as a URL gives it; the native names in a URL's query.
        ({"pool": "true"}, (4, 0, 30.0)),
        ({"min_size": "2", "max_size": "5", "timeout": "7"}, (2, 3, 7.0)),
        ({"pool": "on", "min_size": "3"}, (3, 0, 30.0)),
        # selecto_pool's names keep selecto_pool's defaults, True only turns on.
        ({"pool": True, "pool_size": "3"}, (3, 20, 5.0)),
        ({"pool": {"pgbouncer": "transaction"}}, (10, 20, 5.0)),
        ({}, (10, 20, 5.0)),
    ],
    ids=str,
)
def test_which_defaults_apply(options: dict[str, Any], sizes: tuple[Any]) -> None:
    got = resolved(options)
    assert (got.pool_size, got.max_overflow, got.checkout_timeout) == sizes


@pytest.mark.parametrize(
    ("options", "project", "named"),
    [
        (
            {"pool": {"min_size": 2, "max_overflow": 3}},
            None,
            ("min_size", "max_overflow"),
        ),
        ({"pool": {"pool_size": 2, "max_size": 3}}, None, ("max_size", "pool_size")),
        ({"pool": {"min_size": 2}}, {"pool_size": 5}, ("min_size", "SELECTO_POOL")),
        (
            {"timeout": "3", "pool": {"checkout_timeout": 2}},
            None,
            ("timeout", "checkout"),
        ),
    ],
    ids=str,
)
def test_mixing_native_and_selecto_sizes_is_an_error_naming_both(
    options: dict[str, Any], project: Any, named: tuple[str, str]
) -> None:
    with (
        override_settings(SELECTO_POOL=project),
        pytest.raises(ImproperlyConfigured) as info,
    ):
        resolved(options)
    message = str(info.value)
    assert all(name in message for name in named), message
    assert "not both" in message and SECRET not in message


@pytest.mark.parametrize(
    ("pool", "named"),
    [
        ({"max_size": 2}, "min_size (4, psycopg_pool's default)"),
        ({"min_size": 0}, "without max_size"),
        ({"min_size": 5, "max_size": 3}, "min_size (5)"),
        ({"connection_class": object}, "connection class of its own"),
        ({"configure": print}, "connection_created"),
        ({"check": "sometimes"}, "a callable taking the connection"),
        ({"min_sise": 2}, "did you mean 'min_size'?"),
    ],
    ids=str,
)
def test_native_settings_that_cant_work_say_why(pool: Any, named: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=re.escape(named)):
        resolved({"pool": pool})


@pytest.mark.django_db(transaction=True)
def test_check_runs_at_every_checkout_like_django_61(no_control: None) -> None:
    backends: list[int] = []

    def check(conn: Any) -> None:
        backends.append(conn.info.backend_pid)

    # Django 6.1: OPTIONS["pool"]["check"] wins over CONN_HEALTH_CHECKS.
    pool = {"min_size": 1, "max_size": 1, "check": check}
    with extra_alias(
        "checked", OPTIONS={"pool": pool}, CONN_HEALTH_CHECKS=True
    ) as alias:
        for _ in range(3):
            conn = get_pool(alias).getconn()
            get_pool(alias).putconn(conn)
        assert len(backends) == 3 and len(set(backends)) == 1
        assert "selecto_pool.W002" not in {m.id for m in run_checks()}


def test_check_true_and_none_mean_what_they_say() -> None:
    assert resolved({"pool": {"check": True}}).check is (
        psycopg_pool.ConnectionPool.check_connection
    )
    options = resolved({"pool": {"check": None}}, CONN_HEALTH_CHECKS=True)
    assert options.check is None and "check" in options.explicit


@pytest.mark.django_db(transaction=True)
def test_max_waiting_refuses_the_client_too_many(no_control: None) -> None:
    pool_setting = {"min_size": 1, "max_size": 1, "max_waiting": 1, "timeout": 5}
    with extra_alias("queued", OPTIONS={"pool": pool_setting}) as alias:
        pool = get_pool(alias)
        held = pool.getconn()
        waiter = threading.Thread(target=lambda: pool.putconn(pool.getconn()))
        waiter.start()
        try:
            while pool.stats().waiting < 1:
                waiter.join(0.01)
            with pytest.raises(psycopg_pool.TooManyRequests):
                pool.getconn()
        finally:
            pool.putconn(held)
            waiter.join(10)


@pytest.mark.django_db(transaction=True)
def test_reconnect_failed_is_called_after_reconnect_timeout(no_control: None) -> None:
    gave_up = threading.Event()
    pool_setting = {
        "min_size": 1,
        "reconnect_timeout": 1,
        "reconnect_failed": lambda pool: gave_up.set(),
    }
    # Nothing listens there: every attempt is refused at once.
    with extra_alias("gone", PORT=str(free_port()), OPTIONS={"pool": pool_setting}):
        get_pool("gone")
        assert gave_up.wait(20), "reconnect_failed was not called"


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_keys_that_do_nothing_here_are_reported(
    no_control: None, caplog: pytest.LogCaptureFixture
) -> None:
    pool = {"min_size": 1, "name": "web", "close_returns": True}
    databases = {
        "default": {**connections["default"].settings_dict, "OPTIONS": {"pool": pool}}
    }
    with override_settings(DATABASES=databases):
        warnings = [m for m in run_checks() if m.id == "selecto_pool.W004"]
    assert sorted(w.msg.split("[")[-1].split("]")[0] for w in warnings) == [
        "'close_returns'",
        "'name'",
    ]
    assert "named after its database alias" in " ".join(w.msg for w in warnings)
    caplog.set_level(logging.WARNING, logger="selecto_pool")
    with extra_alias("renamed", OPTIONS={"pool": pool}) as alias:
        assert connections[alias].pool is not None
    assert "['name'] has no effect" in caplog.text


# -- keys that nothing reads -------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
@pytest.mark.parametrize(
    ("options", "hint"),
    [
        ({"pool_sise": "3"}, "did you mean 'pool_size'?"),
        ({"sslmod": "require"}, "did you mean 'sslmode'?"),
        ({"checkout_timeuot": 2}, "did you mean 'checkout_timeout'?"),
        ({"pool": {"pool_sise": 3}}, "did you mean 'pool_size'?"),
        ({"colour": "blue"}, "allowed"),
    ],
    ids=str,
)
def test_unknown_keys_fail_manage_py_check(options: dict[str, Any], hint: str) -> None:
    default = {**connections["default"].settings_dict, "OPTIONS": options}
    databases = {**connections.settings, "default": default}
    with (
        override_settings(DATABASES=databases),
        pytest.raises(SystemCheckError) as info,
    ):
        call_command("check", stdout=StringIO(), stderr=StringIO())
    message = str(info.value)
    assert "selecto_pool.E001" in message and hint.replace("allowed", "") in message
    assert "Pool options: " in message or "allowed keys: " in message


def test_an_unknown_flat_key_is_an_error_at_the_first_query_too() -> None:
    settings_dict = {
        "ENGINE": "selecto_pool.backend",
        "NAME": "app",
        "OPTIONS": {"pool_sise": "3"},
    }
    with pytest.raises(ImproperlyConfigured, match="'pool_sise'"):
        _ = wrapper_for_settings(settings_dict, "typo").pool


@pytest.mark.parametrize(
    "options",
    [
        {"sslmode": "disable", "application_name": "x", "target_session_attrs": "any"},
        {"isolation_level": 1, "assume_role": "app", "server_side_binding": False},
        {"cursor_factory": None, "options": "-c statement_timeout=5000"},
        {"min_size": "1", "check": "true", "max_waiting": "3", "num_workers": "2"},
    ],
    ids=str,
)
def test_keys_that_are_read_pass(options: dict[str, Any]) -> None:
    settings_dict = {
        "ENGINE": "selecto_pool.backend",
        "NAME": "app",
        "OPTIONS": options,
    }
    wrapper = wrapper_for_settings(settings_dict, "fine")
    assert wrapper.pool_options.enabled  # no error
    params = wrapper.get_connection_params()
    # The pool's keys never reach libpq, which would refuse them.
    assert not {"min_size", "check", "max_waiting", "num_workers"} & params.keys()


@pytest.mark.slow
def test_a_typo_in_database_url_fails_manage_py_check(transactional_db: None) -> None:
    env = demo_environment(f"{url_of('default')}?pool_sise=3&sslmode=disable")
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "selecto_pool.E001" in done.stderr
    assert "did you mean 'pool_size'?" in done.stderr
    password = environ.Env.db_url_config(url_of("default"))["PASSWORD"]
    assert password not in done.stderr + done.stdout


class LockedCheck:
    """A check holding a lock: a callable that can't be deep-copied."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, conn: Any) -> None:
        with self.lock:
            pass


def test_options_with_a_callable_check_can_be_shown() -> None:
    check = LockedCheck()
    options = resolved({"pool": {"min_size": 1, "check": check}})
    shown = options.as_dict()
    assert shown["check"] is check and shown["pool_size"] == 1
