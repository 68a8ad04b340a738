"""Operators' view of running processes: poolstats, clearcache, /health/db."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from io import StringIO
from typing import IO, Any

import pytest
from django.core.management import call_command

from selecto_pool import get_pool
from testproject.pgserver import free_port

from .support.database import conninfo_of, url_of
from .support.processes import ROOT, demo_environment


class Processes:
    """A real HTTP server and a worker, both running the demo project."""

    def __init__(self, database_url: str):
        env = demo_environment(database_url)
        self.port = free_port()
        self.web = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "runserver",
                "--noreload",
                f"127.0.0.1:{self.port}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "tests.support.worker"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}") as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                self.get("/health/db")
                return
            except OSError:
                assert time.monotonic() < deadline, "runserver did not start"
                time.sleep(0.1)

    def worker_report(self) -> dict[str, Any]:
        stdout: IO[str] = self.worker.stdout  # type: ignore[assignment]
        return json.loads(stdout.readline())

    def stop(self) -> None:
        for process in (self.web, self.worker):
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def processes(transactional_db: None) -> Iterator[Processes]:
    running = Processes(url_of("default"))
    try:
        running.wait_until_serving()
        running.worker_report()  # the worker is up and querying
        yield running
    finally:
        running.stop()


def poolstats(*args: str) -> dict[str, Any]:
    out = StringIO()
    call_command("poolstats", "--json", "--database", "default", *args, stdout=out)
    return json.loads(out.getvalue())


def rows_by_pid(report: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {row["pid"]: row for row in report["processes"]}


def test_poolstats_lists_every_running_process(processes: Processes) -> None:
    from testproject.library.models import Book

    call_command("seed_demo", stdout=StringIO())
    first_book = Book.objects.order_by("pk").first()
    for _ in range(3):
        assert processes.get(f"/?book={first_book.pk}")[0] == 200
    report = poolstats()
    rows = rows_by_pid(report)
    for process in (processes.web, processes.worker):
        row = rows[process.pid]
        assert row["status"] == "ok" and row["alias"] == "default"
        assert row["checkouts"] > 0 and row["connections"] > 0
        assert row["pool_size"] == 10  # testproject's defaults
    assert report["totals"]["processes"] == len(rows)
    assert report["totals"]["checkouts"] == sum(r["checkouts"] for r in rows.values())

    table = StringIO()
    call_command("poolstats", "--database", "default", stdout=table)
    lines = table.getvalue().splitlines()
    assert lines[0].split()[:3] == ["HOST", "PID", "ALIAS"]
    assert any(line.split()[1] == str(processes.worker.pid) for line in lines[1:])
    assert lines[-1].startswith("TOTAL")

    processes.worker.send_signal(signal.SIGKILL)
    processes.worker.wait()
    # A round waits up to --timeout (2 s) for the processes still listed.
    deadline = time.monotonic() + 10
    while processes.worker.pid in rows_by_pid(poolstats()):
        assert time.monotonic() < deadline, "a killed process is still listed"
        time.sleep(0.2)
    assert processes.web.pid in rows_by_pid(poolstats())


def test_clearcache_empties_prepared_statements_of_running_processes(
    processes: Processes,
) -> None:
    assert all(count >= 1 for count in processes.worker_report()["prepared"])
    out = StringIO()
    call_command("clearcache", "--database", "default", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["processes"] >= 2 and report["connections"] >= 10
    processes.worker_report()  # the line written while clearing
    assert processes.worker_report()["prepared"] == [0] * 10


def test_health_over_real_http(processes: Processes) -> None:
    status, body = processes.get("/health/db")
    assert status == 200
    assert json.loads(body) == {"status": "ok"}
    password = conninfo_of("default")["password"]
    assert password not in body.decode()


@pytest.mark.parametrize("command", ["poolstats", "clearcache"])
@pytest.mark.parametrize("timeout", ["inf", "1e308", "nan", "-1", "0", "301", "soon"])
def test_a_timeout_no_wait_can_take_is_refused(command: str, timeout: str) -> None:
    """``inf`` or ``1e308`` waited for good on a process that never answers
    (one stopped with SIGSTOP is still listed); ``nan``, ``0`` and ``-1``
    asked nobody and reported no process at all."""
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=r"--timeout.*> 0.*at most 300"):
        call_command(command, "--timeout", timeout, stdout=StringIO())


def test_poolstats_of_an_unpooled_alias_is_an_error() -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="unpooled"):
        call_command("poolstats", "--database", "unpooled")


@pytest.mark.django_db(transaction=True)
def test_poolstats_local_shows_this_process() -> None:
    get_pool("default").wait(timeout=5)
    out = StringIO()
    call_command("poolstats", "--local", "--json", "--database", "default", stdout=out)
    [row] = json.loads(out.getvalue())["processes"]
    assert row["pid"] == os.getpid() and row["connections"] >= 4


def test_poolstats_watch_prints_until_interrupted(processes: Processes) -> None:
    env = demo_environment(url_of("default"))
    command = [sys.executable, "manage.py", "poolstats", "--json", "--watch", "0.2"]
    watch = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert watch.stdout is not None
        reports = [json.loads(watch.stdout.readline()) for _ in range(2)]
    finally:
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=10) == 0
    for report in reports:
        assert processes.worker.pid in rows_by_pid(report)


def test_a_process_that_does_not_answer_is_reported_not_waited_for(
    processes: Processes,
) -> None:
    processes.worker.send_signal(signal.SIGSTOP)  # alive, connected, silent
    try:
        started = time.monotonic()
        report = poolstats("--timeout", "0.5")
        elapsed = time.monotonic() - started
    finally:
        processes.worker.send_signal(signal.SIGCONT)
    # Gave up on it after --timeout (0.5 s), up to 1.5 s later on a loaded
    # machine: before the default --timeout (2 s), and not waiting for good.
    assert elapsed < 2
    row = rows_by_pid(report)[processes.worker.pid]
    assert row["status"] == "no answer" and row["checkouts"] is None
    assert rows_by_pid(report)[processes.web.pid]["status"] == "ok"
    assert report["totals"]["processes"] == len(report["processes"]) - 1
