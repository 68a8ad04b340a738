"""fork() after the pool opened: each child gets its own pool and connections.

``os.fork()`` in the test itself, and gunicorn ``--preload``, whose master
loads the project and forks its workers.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connections

from selecto_pool import get_pool
from testproject.library.models import Author
from testproject.pgserver import free_port

from .support.clients import join_all
from .support.database import Observer
from .support.processes import ROOT, report_from_fork


def in_child(parent_pool_id: int) -> dict[str, Any]:
    """Runs in the forked child: what it sees of the pool and the database."""
    pool = get_pool("default")
    report = {
        "same_pool": id(pool) == parent_pool_id,
        "count": Author.objects.count(),
        "backend": connections["default"].connection.info.backend_pid,
    }
    connections["default"].close()
    return report


@pytest.mark.django_db(transaction=True)
def test_forked_child_uses_its_own_connections(observer: Observer) -> None:
    Author.objects.create(name="parent")
    # The parent keeps a connection checked out across the fork, as a
    # preloading server or a test runner mid-request would.
    parent_backend = connections["default"].connection.info.backend_pid
    parent_pool = get_pool("default")
    parent_backends = set(observer.connections_of("selecto-default"))

    report = report_from_fork(lambda: in_child(id(parent_pool)))

    assert report["same_pool"] is False
    assert report["count"] == 1
    assert report["backend"] not in parent_backends
    # The parent's connections were neither used nor closed by the child.
    assert parent_backends <= set(observer.connections_of("selecto-default"))
    assert connections["default"].connection.info.backend_pid == parent_backend
    assert Author.objects.count() == 1
    assert get_pool("default") is parent_pool


# -- gunicorn --preload ---------------------------------------------------------------
def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as reply:
        reply.read()
        return reply.status


@pytest.mark.slow
def test_gunicorn_preload_workers_each_get_their_own_pool(
    demo_env: dict[str, str],
) -> None:
    from testproject.library.models import Book

    call_command("seed_demo", stdout=StringIO())
    book = Book.objects.order_by("pk").first().pk
    port = free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", "--preload", "--workers", "2"),
            *("--bind", f"127.0.0.1:{port}", "--access-logfile", "-"),
            *("--access-logformat", "served-by %(p)s %(s)s"),
            "testproject.wsgi:application",
        ],
        cwd=ROOT,
        env=demo_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                get(f"{base}/health/db")
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        statuses = Counter()

        def browse(_: int) -> None:
            for _ in range(10):
                statuses[get(f"{base}/?book={book}")] += 1

        threads = [threading.Thread(target=browse, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        join_all(threads, timeout=60)
        out = StringIO()
        call_command("poolstats", "--json", "--database", "default", stdout=out)
        answered = {row["pid"]: row for row in json.loads(out.getvalue())["processes"]}
    finally:
        server.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        stdout, stderr = server.communicate(timeout=30)
        stopped = time.monotonic() - stopped

    assert statuses == {200: 80}
    served = Counter(
        line.split()[1].strip("<>")
        for line in stdout.splitlines()
        if line.startswith("served-by")
    )
    workers = {int(pid) for pid in served} - {server.pid}
    assert len(workers) == 2, served  # both workers served, not the master
    for pid in workers:
        row = answered[pid]  # each worker answers for a pool of its own
        assert row["checkouts"] > 0 and row["connections"] > 0
    assert server.pid not in answered, "the preloaded master opened a pool"
    assert server.returncode == 0
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    print(
        f"\ngunicorn: requests per worker {sorted(served.values())}; "
        f"stopped in {stopped:.2f} s after SIGTERM"
    )


def test_a_forked_child_decides_statements_though_a_thread_held_the_lock() -> None:
    """The statement decisions' lock, held by a parent's thread at fork(),
    would be held for good in the child (that thread doesn't exist there):
    its first new statement would hang the child."""
    from selecto_pool._conn import decisions

    store = decisions.decisions
    store.update(0, decisions.verified)  # first use: the fork hook is set up
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)

    def child() -> dict[str, Any]:
        signal.alarm(5)  # a hung child dies, and the test fails
        return {"state": store.update(hash("a new statement"), decisions.verified)}

    try:
        report = report_from_fork(child)
    finally:
        release.set()
        holder.join(10)
    assert report == {"state": decisions.VERIFIED}
