"""Each system check id, triggered by the configuration it is about."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.test import override_settings


def ids(**kwargs: Any) -> set[str]:
    return {message.id for message in run_checks(**kwargs) if message.id}


def databases_with(**changes: Any) -> dict[str, Any]:
    default = {**settings.DATABASES["default"], **changes}
    return {**settings.DATABASES, "default": default}


def test_a_sound_configuration_passes() -> None:
    assert not {i for i in ids() if i.startswith("selecto_pool")}


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
@pytest.mark.parametrize(
    ("changes", "check_id"),
    [
        ({"OPTIONS": {"pool": {"pool_size": -1}}}, "selecto_pool.E001"),
        ({"OPTIONS": {"pool": {"minsize": 2}}}, "selecto_pool.E001"),
        ({"CONN_MAX_AGE": 60}, "selecto_pool.E002"),
        ({"CONN_HEALTH_CHECKS": True}, "selecto_pool.W002"),
        (
            {"OPTIONS": {"pool": {"pgbouncer": "transaction", "prepare_threshold": 2}}},
            "selecto_pool.W003",
        ),
    ],
)
def test_database_settings_checks(changes: dict[str, Any], check_id: str) -> None:
    with override_settings(DATABASES=databases_with(**changes)):
        assert check_id in ids()


@pytest.mark.parametrize(
    ("health", "check_id"),
    [
        ({"probe_timeout": -1}, "selecto_pool.E003"),
        ({"token": "short"}, "selecto_pool.E003"),
        ({"colour": "green"}, "selecto_pool.E003"),
        ({"database": "unpooled"}, "selecto_pool.E004"),
    ],
)
def test_health_settings_checks(health: dict[str, Any], check_id: str) -> None:
    with override_settings(SELECTO_POOL_HEALTH=health):
        assert check_id in ids()


@override_settings(SELECTO_POOL_EXPECTED_PROCESSES=0)
def test_expected_processes_must_be_positive() -> None:
    assert "selecto_pool.E005" in ids(databases=["default"])


@pytest.mark.django_db
def test_pools_larger_than_the_server_allows_warn() -> None:
    assert "selecto_pool.W001" not in ids(databases=["default"])
    with override_settings(SELECTO_POOL_EXPECTED_PROCESSES=100):
        messages = [m for m in run_checks(databases=["default"]) if m.id]
    [warning] = [m for m in messages if m.id == "selecto_pool.W001"]
    assert "100 process(es) x 9 connections" in warning.msg


def test_capacity_is_only_checked_when_asked() -> None:
    with override_settings(SELECTO_POOL_EXPECTED_PROCESSES=100000):
        assert "selecto_pool.W001" not in ids()
