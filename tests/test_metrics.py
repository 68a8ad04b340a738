"""Metrics for Prometheus: exact, named by the conventions, one series per process.

Read back with prometheus_client's OpenMetrics parser, which refuses what
Prometheus would refuse.
"""

from __future__ import annotations

import dataclasses
import os
import socket

import pytest
from django.test import Client, override_settings
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from selecto_pool import PoolStats, get_pool

TOKEN = "a-long-enough-health-token"


def samples(text: str) -> dict[str, list[Sample]]:
    """Every sample of an OpenMetrics text, by sample name (strictly parsed)."""
    found: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def big_stats() -> PoolStats:
    stats = get_pool("default").stats()
    return dataclasses.replace(
        stats,
        checkouts=12_345_678,
        connections_replaced=2**53 - 1,
        connections_opened=1_000_001,
        checkout_wait_p99_ms=81.3,
    )


@pytest.mark.django_db(transaction=True)
def test_counters_are_exact() -> None:
    from selecto_pool._ops import metrics

    text = metrics.render(metrics.families({"default": big_stats()}, {}))
    found = samples(text)
    assert found["selecto_pool_checkouts_total"][0].value == 12_345_678
    assert found["selecto_pool_connections_replaced_total"][0].value == 2**53 - 1
    assert found["selecto_pool_connections_opened_total"][0].value == 1_000_001
    assert found["selecto_pool_checkout_wait_p99_seconds"][0].value == 0.0813


@pytest.mark.django_db(transaction=True)
@override_settings(SELECTO_POOL_HEALTH={"token": TOKEN})
def test_health_metrics_follow_the_naming_conventions_and_name_the_process() -> None:
    response = Client().get(
        "/health/db?format=openmetrics", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    families = list(text_string_to_metric_families(response.content.decode()))
    by_name = {family.name: family for family in families}
    for family in families:
        assert family.name.startswith("selecto_pool_")
        if family.type == "counter":
            assert all(s.name == family.name + "_total" for s in family.samples)
        if family.name.endswith("_seconds"):
            assert family.unit == "seconds"
        for sample in family.samples:
            assert sample.labels["pid"] == str(os.getpid())
            assert sample.labels["host"] == socket.gethostname()
    assert by_name["selecto_pool_checkout_wait_p50_seconds"].type == "gauge"
    [up] = by_name["selecto_pool_up"].samples
    assert up.labels["alias"] == "default" and up.value == 1
    pool = get_pool("default").stats()
    checkouts = {
        s.labels.get("alias"): s.value
        for s in by_name["selecto_pool_checkouts"].samples
    }
    assert checkouts["default"] <= pool.checkouts  # read just before
    assert by_name["selecto_pool_control_rejected"].type == "counter"


@pytest.mark.django_db(transaction=True)
def test_the_collector_feeds_a_prometheus_client_registry() -> None:
    from selecto_pool.metrics import PoolCollector

    get_pool("default")
    registry = CollectorRegistry()
    registry.register(PoolCollector())
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(PoolCollector())  # names are known without a scrape
    found = samples(generate_latest(registry).decode())
    assert "selecto_pool_up" not in found  # a scrape doesn't probe
    # Keyed by alias (a direct pool's samples have none: see
    # tests/test_direct_operations.py).
    checkouts = {
        s.labels.get("alias"): s for s in found["selecto_pool_checkouts_total"]
    }
    assert checkouts["default"].value == get_pool("default").stats().checkouts
    assert checkouts["default"].labels["pid"] == str(os.getpid())
    connections_min = {
        s.labels.get("alias"): s.value for s in found["selecto_pool_connections_min"]
    }
    assert connections_min["default"] == 4
