"""django-prometheus's query metrics on the pooled backend, and the pool's
metrics on its ``/metrics``.

``ENGINE: "selecto_pool.backend.prometheus"`` must count what
django-prometheus's own PostgreSQL backend counts for the same work (the
alias ``stock_prometheus``), while statements still get prepared.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.db import DatabaseError, connections, transaction
from django.test import Client, override_settings
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from selecto_pool import get_pool, pool_stats
from selecto_pool.metrics import PoolCollector
from testproject.library.models import Author

from .support.hostile import poolstats, wait_until_answering

ALIASES = ["default", "prometheus", "stock_prometheus"]
METRICS = [
    ("django_db_execute_total", {}),
    ("django_db_execute_many_total", {}),
    ("django_db_errors_total", {"type": "DivisionByZero"}),
    ("django_db_errors_total", {"type": "UndefinedTable"}),
    ("django_db_query_duration_seconds_count", {}),
    ("django_db_new_connections_total", {}),
]


def counts(alias: str) -> dict[str, float]:
    """django-prometheus's counters for ``alias``, from prometheus_client."""
    found = {}
    for name, labels in METRICS:
        labels = {"alias": alias, "vendor": "postgresql", **labels}
        value = REGISTRY.get_sample_value(name, labels) or 0.0
        found[f"{name}{labels.get('type', '')}"] = value
    return found


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}


def work(alias: str, new_sql: str) -> None:
    """What an application does: ORM reads and writes, a batch, errors."""
    authors = Author.objects.using(alias)
    authors.bulk_create(Author(name=f"a{i}") for i in range(3))
    for i in range(6):  # hot: prepared from the second run on each connection
        assert authors.filter(name=f"a{i % 3}").exists()
    with transaction.atomic(using=alias):
        authors.filter(name="a0").update(name="b0")
        # A server-side cursor (not counted by django-prometheus).
        assert len(list(authors.iterator(chunk_size=2))) >= 3
        # New to the process: run inside a savepoint of the pool's own until
        # it has typed once.
        with connections[alias].cursor() as cursor:
            cursor.execute(new_sql, ["b0"])
            assert ("b0",) in cursor.fetchall()
    with connections[alias].cursor() as cursor:
        # Django's cursor API: the ORM itself never batches on PostgreSQL.
        cursor.executemany(
            "INSERT INTO library_author (name) VALUES (%s)", [["x"], ["y"], ["z"]]
        )
        with pytest.raises(DatabaseError), transaction.atomic(using=alias):
            cursor.execute("SELECT 1 / %s", [0])
        with pytest.raises(DatabaseError):
            cursor.execute("SELECT * FROM no_such_table WHERE id = %s", [1])
    connections[alias].close()


@pytest.mark.django_db(transaction=True, databases=ALIASES)
def test_query_metrics_match_django_prometheus_own_backend() -> None:
    stock_before, ours_before = counts("stock_prometheus"), counts("prometheus")
    work(
        "stock_prometheus",
        f"SELECT name FROM library_author WHERE name = %s -- {uuid.uuid4()}",
    )
    stock = moved(stock_before, counts("stock_prometheus"))
    work(
        "prometheus",
        f"SELECT name FROM library_author WHERE name = %s -- {uuid.uuid4()}",
    )
    ours = moved(ours_before, counts("prometheus"))
    assert stock["django_db_execute_total"] > 0
    assert stock["django_db_execute_many_total"] == 3
    assert stock["django_db_errors_totalDivisionByZero"] == 1
    assert stock["django_db_errors_totalUndefinedTable"] == 1
    assert ours == stock
    # ... while the pool prepared the hot statements.
    stats = pool_stats("prometheus")
    assert stats.cache_hits > 0 and stats.cache_statements > 0


@pytest.mark.django_db(transaction=True, databases=ALIASES)
def test_statements_are_still_prepared_on_the_server() -> None:
    authors = Author.objects.using("prometheus")
    before = REGISTRY.get_sample_value(
        "django_db_execute_total", {"alias": "prometheus", "vendor": "postgresql"}
    )
    for _ in range(3):
        list(authors.filter(name="nobody"))
    with connections["prometheus"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ["%library_author%"],
        )
        assert cursor.fetchone()[0] >= 1
    after = REGISTRY.get_sample_value(
        "django_db_execute_total", {"alias": "prometheus", "vendor": "postgresql"}
    )
    assert after == (before or 0.0) + 4


@pytest.mark.django_db(transaction=True, databases=ALIASES)
def test_the_control_channel_is_not_counted_as_queries() -> None:
    wait_until_answering("prometheus")
    before = counts("prometheus")
    for _ in range(2):
        assert poolstats("prometheus", "--timeout", "1")["processes"]
    assert counts("prometheus") == before


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_system_checks_cover_the_prometheus_engine() -> None:
    with override_settings(SELECTO_POOL_HEALTH={"database": "prometheus"}):
        assert not [m for m in run_checks() if m.id == "selecto_pool.E004"]
    broken = {**settings.DATABASES["prometheus"], "CONN_MAX_AGE": 60}
    with override_settings(DATABASES={**settings.DATABASES, "prometheus": broken}):
        [error] = [m for m in run_checks() if m.id == "selecto_pool.E002"]
    assert "DATABASES['prometheus']" in error.msg


@pytest.fixture
def pool_collector() -> Iterator[None]:
    collector = PoolCollector()
    REGISTRY.register(collector)
    try:
        yield
    finally:
        REGISTRY.unregister(collector)


@pytest.mark.django_db(transaction=True, databases=ALIASES)
@override_settings(ROOT_URLCONF="tests.support.ecosystem_urls")
def test_pool_metrics_on_django_prometheus_metrics_view(pool_collector: None) -> None:
    assert Author.objects.using("prometheus").count() == 0
    get_pool("prometheus")
    response = Client().get("/metrics")
    assert response.status_code == 200
    samples = {
        (sample.name, sample.labels.get("alias")): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }
    assert samples[("selecto_pool_checkouts_total", "prometheus")] >= 1
    assert samples[("selecto_pool_connections_max", "prometheus")] == 1
    assert samples[("django_db_execute_total", "prometheus")] >= 1
