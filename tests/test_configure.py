"""Configuring the pool: defaults, precedence, URLs, and every invalid option."""

from __future__ import annotations

from typing import Any

import environ
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from selecto_pool import PoolOptions, start_pool
from selecto_pool.backend.base import DatabaseWrapper

from .support.database import wrapper_for_settings

SECRET = "hunter2-never-printed"


def wrapper_for(options: dict[str, Any], **settings: Any) -> DatabaseWrapper:
    url = f"postgres://app:{SECRET}@127.0.0.1:1/app"
    settings_dict = {
        **environ.Env.db_url_config(url),
        "ENGINE": "selecto_pool.backend",
        "OPTIONS": options,
        **settings,
    }
    return wrapper_for_settings(settings_dict, "configured")


def test_defaults_follow_the_seed() -> None:
    options = wrapper_for({}).pool_options
    assert options == PoolOptions()
    assert (options.pool_size, options.max_overflow) == (10, 20)
    assert (options.connection_timeout, options.checkout_timeout) == (5, 5.0)
    assert options.prepared_statement_cache_size == 256
    assert options.prepared_statement_cache_mib == 16
    assert options.max_size == 30


@pytest.mark.parametrize("off", [0, 0.0, None, "0", "off", "None"])
def test_reliability_options_turn_off_with_zero_or_none(off: Any) -> None:
    options = wrapper_for(
        {
            "pool": {
                "health_check_interval": off,
                "leak_detection_threshold": off,
                "exit_timeout": off,
            }
        }
    ).pool_options
    assert options.health_check_interval == 0.0
    assert options.leak_detection_threshold == 0.0
    assert options.exit_timeout == 0.0
    defaults = wrapper_for({}).pool_options
    assert (defaults.health_check_interval, defaults.exit_timeout) == (30.0, 2.0)
    assert defaults.leak_detection_threshold == 0.0  # off unless asked for
    url = wrapper_for({"leak_detection_threshold": "2.5"}).pool_options
    assert url.leak_detection_threshold == 2.5


def test_pool_dict_beats_flat_options_beats_project_defaults() -> None:
    with override_settings(SELECTO_POOL={"pool_size": 3, "max_overflow": 1}):
        options = wrapper_for({"max_overflow": 7, "pool": {"checkout_timeout": 2}})
        resolved = options.pool_options
    assert (resolved.pool_size, resolved.max_overflow) == (3, 7)
    assert resolved.checkout_timeout == 2.0


def test_database_url_query_string_configures_the_pool() -> None:
    url = (
        f"postgres://app:{SECRET}@db:5432/app"
        "?pool_size=12&max_overflow=0&checkout_timeout=0.5&sslmode=disable"
    )
    settings_dict = {**environ.Env.db_url_config(url), "ENGINE": "selecto_pool.backend"}
    wrapper = wrapper_for_settings(settings_dict, "from_url")
    options = wrapper.pool_options
    assert (options.pool_size, options.max_overflow) == (12, 0)
    assert options.checkout_timeout == 0.5
    params = wrapper.get_connection_params()
    assert "pool_size" not in params and "checkout_timeout" not in params
    assert params["sslmode"] == "disable"
    assert params["connect_timeout"] == 5


@pytest.mark.parametrize("flag", [False, "false", "off"])
def test_pool_false_disables_pooling(flag: Any) -> None:
    wrapper = wrapper_for({"pool": flag}, CONN_MAX_AGE=60)
    assert wrapper.pool is None
    assert wrapper.pool_options.enabled is False


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("pool_size", -3, "an integer >= 0"),
        ("pool_size", "ten", "an integer >= 0"),
        ("pool_size", 2.5, "an integer >= 0"),
        ("pool_size", True, "an integer >= 0"),
        ("pool_size", "--5", "an integer >= 0"),
        ("max_overflow", -1, "an integer >= 0"),
        ("max_overflow", None, "an integer >= 0"),
        ("connection_timeout", 1, "an integer >= 2"),
        ("connection_timeout", "5s", "an integer >= 2"),
        ("checkout_timeout", 0, "a number of seconds > 0"),
        ("checkout_timeout", "soon", "a number of seconds > 0"),
        ("checkout_timeout", float("inf"), "a number of seconds > 0"),
        ("max_lifetime", -1, "a number of seconds >= 0.1"),
        # Shorter periods reconnect or sweep in a busy loop.
        ("max_lifetime", 1e-300, "a number of seconds >= 0.1"),
        ("max_idle", 0, "a number of seconds >= 0.1"),
        ("max_idle", 0.05, "a number of seconds >= 0.1"),
        ("prepared_statement_cache_size", -1, "an integer >= 0"),
        ("health_check_interval", -1, "a number of seconds >= 0.1, or 0 or None (off)"),
        ("health_check_interval", 1e-300, "a number of seconds >= 0.1, or 0 or None"),
        ("health_check_interval", "hourly", "a number of seconds >= 0.1, or 0 or None"),
        ("leak_detection_threshold", -0.5, "a number of seconds > 0, or 0 or None"),
        ("leak_detection_threshold", True, "a number of seconds > 0, or 0 or None"),
        ("leak_detection_threshold", float("nan"), "a number of seconds > 0"),
        ("exit_timeout", "soon", "a number of seconds > 0, or 0 or None (off)"),
        ("exit_timeout", float("inf"), "a number of seconds > 0, or 0 or None"),
    ],
)
@pytest.mark.parametrize("where", ["pool", "flat", "project"])
def test_invalid_option_names_key_value_and_allowed(
    key: str, value: Any, allowed: str, where: str
) -> None:
    if where == "project":
        with override_settings(SELECTO_POOL={key: value}):
            wrapper = wrapper_for({})
            with pytest.raises(ImproperlyConfigured) as info:
                _ = wrapper.pool_options
    else:
        options = {"pool": {key: value}} if where == "pool" else {key: value}
        with pytest.raises(ImproperlyConfigured) as info:
            _ = wrapper_for(options).pool_options
    message = str(info.value)
    assert key in message and repr(value) in message and allowed in message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("options", "settings", "named"),
    [
        ({"pool": {"min_size": 4, "pool_size": 4}}, {}, "'min_size'"),
        ({"pool": {"max_size": 4, "max_overflow": 4}}, {}, "'max_size'"),
        ({"pool": {"min_size": 4, "max_size": 2}}, {}, "'max_size'"),
        ({"pool": {"num_workers": 0}}, {}, "'num_workers'"),
        ({"pool": {"conninfo": "host=db"}}, {}, "'conninfo'"),
        ({"pool": {"pool_size": 0, "max_overflow": 0}}, {}, "no connection"),
        ({"pool": {"pool_sise": 4}}, {}, "'pool_sise'"),
        ({"pool": 5}, {}, "['pool'] = 5"),
        ({"pool": "sometimes"}, {}, "'sometimes'"),
        ({}, {"CONN_MAX_AGE": 60}, "CONN_MAX_AGE"),
        ({}, {"CONN_MAX_AGE": None}, "CONN_MAX_AGE"),
        ({"connect_timeout": 3, "pool": {"connection_timeout": 4}}, {}, "both"),
    ],
)
def test_invalid_configuration_is_named(
    options: dict[str, Any], settings: dict[str, Any], named: str
) -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        _ = wrapper_for(options, **settings).pool
    assert named in str(info.value)
    assert SECRET not in str(info.value)


def test_unknown_key_lists_the_allowed_ones() -> None:
    with pytest.raises(
        ImproperlyConfigured, match="allowed keys: check, checkout_timeout"
    ):
        _ = wrapper_for({"pool": {"wait": 1}}).pool_options


@override_settings(SELECTO_POOL=["pool_size", 3])
def test_project_defaults_must_be_a_dict() -> None:
    with pytest.raises(ImproperlyConfigured, match="SELECTO_POOL"):
        _ = wrapper_for({}).pool_options


def test_start_pool_validates_options_before_connecting() -> None:
    with pytest.raises(ImproperlyConfigured, match="'pool_size'") as info:
        start_pool(f"postgres://app:{SECRET}@127.0.0.1:1/app", pool_size=-1)
    assert SECRET not in str(info.value)
    with pytest.raises(ImproperlyConfigured, match="'poolsize'"):
        start_pool(f"postgres://app:{SECRET}@127.0.0.1:1/app", poolsize=2)


def test_django_native_pool_options_keep_working() -> None:
    """OPTIONS["pool"] written for Django's own pool (psycopg_pool's names)."""
    options = wrapper_for({"pool": {"min_size": 2, "max_size": 6, "timeout": 3}})
    resolved = options.pool_options
    assert (resolved.pool_size, resolved.max_overflow) == (2, 4)
    assert resolved.checkout_timeout == 3.0
