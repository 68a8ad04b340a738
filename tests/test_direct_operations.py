"""Operators' view of the direct API's pools: poolstats, clearcache, metrics.

A process's pools of ``start_pool()`` and ``astart_pool()`` show next to its
ORM pools, as ``direct:<name>`` rows and as series labelled ``pool`` and
``kind="direct"``; an async pool is read from any thread and cleared in its
own event loop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from io import StringIO
from typing import IO, Any

import pytest
from django.core.management import call_command
from django.test import Client, override_settings
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import selecto_pool as sp
from selecto_pool._process import control

from .support.aio import LoopThread, loop_thread
from .support.clients import wait_for
from .support.database import conninfo_of, url_of
from .support.processes import ROOT, demo_environment

TOKEN = "a-long-enough-health-token"


@pytest.fixture
def pools(transactional_db: None) -> Iterator[tuple[LoopThread, sp.AsyncSelectoPool]]:
    """An async pool served by an event loop in another thread (as an ASGI
    server's), and two sync direct pools of the same name."""
    sync_pools = [
        sp.start_pool(conninfo_of("default"), name="ops-sync", pool_size=1)
        for _ in range(2)
    ]
    with loop_thread() as loop:
        pool = loop.run(
            sp.astart_pool(
                conninfo_of("default"),
                name="ops-async",
                pool_size=2,
                max_overflow=0,
                prepare_threshold=0,
            )
        )
        try:
            loop.run(pool.wait(timeout=10))
            for _ in range(3):
                loop.run(sp.aexecute(pool, "SELECT %s::int", [1]))
            yield loop, pool
        finally:
            loop.run(sp.astop_pool(pool, timeout=1))
            for sync_pool in sync_pools:
                sp.stop_pool(sync_pool, timeout=1)


def local_rows(*args: str) -> list[dict[str, Any]]:
    out = StringIO()
    call_command("poolstats", "--local", "--json", *args, stdout=out)
    rows: list[dict[str, Any]] = json.loads(out.getvalue())["processes"]
    return rows


def test_poolstats_local_shows_this_processs_direct_pools(
    pools: tuple[LoopThread, sp.AsyncSelectoPool],
) -> None:
    sp.get_pool("default")
    rows = {row["alias"]: row for row in local_rows()}
    row = rows["direct:ops-async"]
    assert (row["kind"], row["pid"], row["status"]) == ("direct", os.getpid(), "ok")
    assert (row["checkouts"], row["connections"], row["max_size"]) == (3, 2, 2)
    assert row["cache_statements"] == 2  # one per connection, read from here
    # Two pools of one name: told apart, the later one numbered.
    assert rows["direct:ops-sync"]["kind"] == rows["direct:ops-sync#2"]["kind"]
    assert rows["default"]["kind"] == "alias"
    # --database picks an alias: no direct pool.
    assert {row["kind"] for row in local_rows("--database", "default")} == {"alias"}
    table = StringIO()
    call_command("poolstats", "--local", stdout=table)
    assert "direct:ops-async" in table.getvalue()
    assert "TOTAL (1 process)" in table.getvalue()


def test_clearcache_local_clears_an_async_pool_in_its_loop(
    pools: tuple[LoopThread, sp.AsyncSelectoPool],
) -> None:
    _, pool = pools
    assert sp.pool_stats(pool).cache_statements == 2
    out = StringIO()
    call_command("clearcache", "--local", "--json", stdout=out)
    assert json.loads(out.getvalue())["connections"] >= 2 + 2  # ours, sync ones
    assert sp.pool_stats(pool).cache_statements == 0


@override_settings(SELECTO_POOL_HEALTH={"token": TOKEN})
def test_openmetrics_export_direct_pools_apart_from_aliases(
    pools: tuple[LoopThread, sp.AsyncSelectoPool],
) -> None:
    from selecto_pool.metrics import PoolCollector

    response = Client().get(
        "/health/db?format=openmetrics", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 200
    registry = CollectorRegistry()
    registry.register(PoolCollector())
    for text in (response.content.decode(), generate_latest(registry).decode()):
        # Parsed strictly, as Prometheus would: no duplicate series.
        by_name = {f.name: f for f in text_string_to_metric_families(text)}
        checkouts = by_name["selecto_pool_checkouts"].samples
        direct = {
            s.labels["pool"]: s for s in checkouts if s.labels.get("kind") == "direct"
        }
        assert direct["ops-async"].value == 3
        assert direct["ops-async"].labels == {
            "pool": "ops-async",
            "kind": "direct",
            "host": direct["ops-async"].labels["host"],
            "pid": str(os.getpid()),
        }
        assert {"ops-sync", "ops-sync#2"} <= set(direct)
        aliases = [s for s in checkouts if "alias" in s.labels]
        assert aliases and all("pool" not in s.labels for s in aliases)
        [connections] = [
            s
            for s in by_name["selecto_pool_connections"].samples
            if s.labels.get("pool") == "ops-async"
        ]
        assert connections.value == 2


# -- other processes --------------------------------------------------------------
class AsyncWorker:
    """``tests.support.async_worker`` running the demo project."""

    def __init__(self, database_url: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.async_worker"],
            cwd=ROOT,
            env=demo_environment(database_url),
            stdout=subprocess.PIPE,
            text=True,
        )

    def report(self) -> dict[str, Any]:
        stdout: IO[str] = self.process.stdout  # type: ignore[assignment]
        return json.loads(stdout.readline())


@pytest.fixture
def async_worker(transactional_db: None) -> Iterator[AsyncWorker]:
    worker = AsyncWorker(url_of("default"))
    try:
        assert worker.report()["prepared"] == [1, 1]
        yield worker
    finally:
        worker.process.kill()
        worker.process.wait()


def test_poolstats_and_clearcache_reach_the_async_pool_of_another_process(
    async_worker: AsyncWorker,
) -> None:
    def rows() -> dict[str, dict[str, Any]]:
        out = StringIO()
        call_command("poolstats", "--json", "--timeout", "5", stdout=out)
        report = json.loads(out.getvalue())["processes"]
        return {r["alias"]: r for r in report if r["pid"] == async_worker.process.pid}

    found = rows()
    assert found["default"]["kind"] == "alias"
    row = found["direct:async-worker"]
    assert (row["kind"], row["status"], row["pool_size"]) == ("direct", "ok", 2)
    assert row["cache_statements"] == 2 and row["checkouts"] >= 2
    # Asked for one alias, a process shows that alias's pool only.
    out = StringIO()
    call_command("poolstats", "--json", "--database", "default", stdout=out)
    assert {r["kind"] for r in json.loads(out.getvalue())["processes"]} == {"alias"}

    out = StringIO()
    call_command("clearcache", "--json", "--timeout", "5", stdout=out)
    assert json.loads(out.getvalue())["connections"] >= 2
    deadline = time.monotonic() + 10
    while async_worker.report()["prepared"] != [0, 0]:
        assert time.monotonic() < deadline, "the async pool was not cleared"


def test_a_reply_lists_the_direct_pools_that_fit_and_counts_the_rest(
    pools: tuple[LoopThread, sp.AsyncSelectoPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """NOTIFY carries under 8000 bytes: the direct pools past that are
    counted, and the rest of the reply still goes out."""
    from selecto_pool._process import control_messages as messages
    from selecto_pool._process import direct

    # Far more than one reply can carry, each named apart.
    many = [(f"{name}-{n}", stats) for n in range(20) for name, stats in direct.stats()]
    monkeypatch.setattr(direct, "stats", lambda: many)
    sp.get_pool("default")
    wait_for(lambda: "default" in control.counters(), timeout=10)
    out, err = StringIO(), StringIO()
    call_command("poolstats", "--json", "--timeout", "5", stdout=out, stderr=err)
    ours = [
        r for r in json.loads(out.getvalue())["processes"] if r["pid"] == os.getpid()
    ]
    listed = [r for r in ours if r["kind"] == "direct"]
    assert [r["kind"] for r in ours].count("alias") >= 1
    assert 0 < len(listed) < min(len(many), messages.MAX_DIRECT)
    assert "more direct pool(s) than one reply can list" in err.getvalue()
