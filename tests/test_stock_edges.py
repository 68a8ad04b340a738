"""Edges where the backend must answer exactly as Django's stock backend does."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import DataError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import load_backend

from .support.database import wrapper_for_settings

HEALTH_CHECK_TESTS = {
    "backends.base.test_base.ConnectionHealthChecksTests.test_health_checks_enabled",
    "backends.base.test_base.ConnectionHealthChecksTests."
    "test_set_autocommit_health_checks_enabled",
}


def skipped_by_django(wrapper: BaseDatabaseWrapper) -> set[str]:
    return set().union(*wrapper.features.django_test_skips.values())


@pytest.mark.parametrize(
    "options",
    [{}, {"pool": True}, {"pool": {"pool_size": 2}}, {"pool_size": 2}],
    ids=["no OPTIONS", "pool True", "pool dict", "flat option"],
)
def test_django_sees_a_pooled_backend_whenever_the_pool_is_on(
    options: dict[str, Any],
) -> None:
    """Django's suite skips its health-check tests for pooled connections."""
    settings_dict = {**connections["default"].settings_dict, "OPTIONS": options}
    wrapper = wrapper_for_settings(settings_dict, "pooled-features")
    assert skipped_by_django(wrapper) >= HEALTH_CHECK_TESTS
    assert wrapper.features.is_pooled  # type: ignore[attr-defined]


def test_django_sees_an_unpooled_backend_when_the_pool_is_off() -> None:
    settings_dict = {**connections["default"].settings_dict, "OPTIONS": {"pool": False}}
    wrapper = wrapper_for_settings(settings_dict, "unpooled-features")
    assert not HEALTH_CHECK_TESTS & skipped_by_django(wrapper)
    assert not wrapper.features.is_pooled  # type: ignore[attr-defined]


@pytest.fixture
def stock(transactional_db: None) -> Iterator[BaseDatabaseWrapper]:
    """Django's own PostgreSQL backend on the same database, unpooled."""
    settings_dict = {
        **connections["default"].settings_dict,
        "ENGINE": "django.db.backends.postgresql",
        "OPTIONS": {},
    }
    backend = load_backend("django.db.backends.postgresql")
    completed = connections.configure_settings({"default": settings_dict})
    wrapper = backend.DatabaseWrapper(completed["default"], alias="stock")
    yield wrapper
    wrapper.close()


def logged_sql(wrapper: BaseDatabaseWrapper, sql: str, params: Any) -> Any:
    """What ``connection.queries`` shows for a query (DEBUG's log)."""
    wrapper.force_debug_cursor = True
    try:
        with wrapper.cursor() as cursor, contextlib.suppress(DataError):
            cursor.execute(sql, params)
    finally:
        wrapper.force_debug_cursor = False
    return wrapper.queries_log[-1]["sql"]


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        ("SELECT %s::text", ["nul \x00 byte"]),  # can't be sent: DataError
        ("SELECT %s::int + %s", [1, 2]),
    ],
    ids=["DataError", "ok"],
)
def test_last_executed_query_is_the_stock_backends(
    stock: BaseDatabaseWrapper, sql: str, params: Any
) -> None:
    ours = connections["default"]
    assert logged_sql(ours, sql, params) == logged_sql(stock, sql, params)
