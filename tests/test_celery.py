"""A Celery prefork worker, configured as the README says, keeps one pool per process.

Celery's Django fixup calls ``close()`` and then ``close_pool()`` around every
task when ``OPTIONS["pool"]`` is set, so that no pool is shared across
``fork()``; selecto_pool's pools are fork-safe already, so the worker must not
pay for a new pool per task. A real ``celery worker --pool=prefork`` on kombu's
``filesystem://`` broker: no service beyond the suite's PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support.celery_app import (
    APPLICATION_NAME,
    CLOSE_POOL,
    POOL_SIZE,
    PROBE,
    configured,
)
from .support.database import Observer, url_of
from .support.processes import ROOT

WORKERS = 2
TASKS = 50


@pytest.fixture
def celery_worker(tmp_path: Path, observer: Observer) -> Iterator[Path]:
    """``celery worker --pool=prefork --concurrency=2`` on the test database."""
    env = {
        **os.environ,
        "DATABASE_URL": url_of("default"),
        "DJANGO_SETTINGS_MODULE": "tests.support.celery_settings",
        "SELECTO_CELERY_DIR": str(tmp_path),
    }
    command = [
        *(sys.executable, "-m", "celery", "-A", "tests.support.celery_app"),
        *("worker", "--pool=prefork", f"--concurrency={WORKERS}"),
        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
        "--loglevel=WARNING",
    ]
    worker = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield tmp_path
    finally:
        # SIGTERM: Celery's warm shutdown, which also ends the pool processes.
        worker.send_signal(signal.SIGTERM)
        try:
            output, _ = worker.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            output, _ = worker.communicate()
        sys.stderr.write(output)


def worker_connections(observer: Observer, pids: set[int]) -> list[int]:
    """Server sessions of the worker processes: pooled ones and control ones."""
    control = [f"selecto_pool:ctl:{pid}:default" for pid in pids]
    rows = observer.conn.execute(
        "SELECT pid FROM pg_stat_activity "
        "WHERE application_name = %s OR application_name = ANY(%s)",
        [APPLICATION_NAME, control],
    ).fetchall()
    return [pid for (pid,) in rows]


@pytest.mark.slow
def test_prefork_worker_keeps_one_pool_per_process(
    celery_worker: Path, observer: Observer
) -> None:
    app = configured(celery_worker)
    sent = [app.send_task(PROBE) for _ in range(TASKS)]
    reports = [result.get(timeout=60, interval=0.05) for result in sent]

    pids = {report["pid"] for report in reports}
    assert len(pids) <= WORKERS
    # One pool per process, kept from task to task: its connections serve
    # every task (each new pool would have opened new server sessions).
    backends = {report["backend"] for report in reports}
    assert len(backends) <= WORKERS * POOL_SIZE, (
        f"{TASKS} tasks used {len(backends)} server sessions: pools were rebuilt"
    )
    assert len(worker_connections(observer, pids)) <= WORKERS * (POOL_SIZE + 1)

    # A close_pool() that a task means still closes the pool.
    report = app.send_task(CLOSE_POOL).get(timeout=60, interval=0.05)
    assert report["closed"] is True
