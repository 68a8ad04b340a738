"""Operators' view of running processes: poolstats, clearcache, /health/db."""

from __future__ import annotations

import json
import os
import re
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
from django.core.management.base import CommandError

from selecto_pool import get_pool
from testproject.pgserver import free_port

from .support.database import conninfo_of, url_of
from .support.hostile import extra_alias
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
    with pytest.raises(CommandError, match="unpooled"):
        call_command("poolstats", "--database", "unpooled")


@pytest.mark.django_db(transaction=True)
def test_poolstats_table_fits_100_columns_and_shows_the_max_size() -> None:
    get_pool("default").wait(timeout=5)
    out = StringIO()
    call_command("poolstats", "--local", "--database", "default", stdout=out)
    header, row, total = out.getvalue().splitlines()
    assert all(len(line) <= 100 for line in (header, row, total))
    titles = re.split(r"\s{2,}", header)
    cells = dict(zip(titles, row.split(), strict=True))
    assert (cells["SIZE"], cells["MAX"]) == ("4", "8")  # default: 4 + 4
    assert cells["PID"] == str(os.getpid())
    wide = StringIO()
    call_command("poolstats", "--local", "--wide", "--database", "default", stdout=wide)
    wide_header = wide.getvalue().splitlines()[0]
    for title in ("MAX", "OVERFLOW", "P50 MS", "HIT RATIO", "AGE S", "RECONNECTS"):
        assert title in wide_header
    [json_row] = poolstats("--local")["processes"]
    assert json_row["max_size"] == 8 and json_row["cache_hit_ratio"] is not None


def test_poolstats_without_answers_fails_and_says_why(transactional_db: None) -> None:
    # Nobody runs a pool for this alias: no control connection to ask.
    with extra_alias("lonely") as alias:
        for extra in ([], ["--json"]):
            out = StringIO()
            with pytest.raises(CommandError) as info:
                call_command(
                    "poolstats",
                    "--database",
                    alias,
                    "--timeout",
                    "0.3",
                    *extra,
                    stdout=out,
                )
            message = str(info.value)
            assert message.startswith("No process answered")
            assert "pooling off" in message and "another ENGINE" in message
            assert "database 'test_selecto'" in message
            password = conninfo_of("default")["password"]
            assert password not in message + out.getvalue()
        assert json.loads(out.getvalue())["processes"] == []


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
        reports = [json.loads(watch.stdout.readline()) for _ in range(3)]
    finally:
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=30) == 0
    for report in reports:
        assert processes.worker.pid in rows_by_pid(report)
        assert report["time"][:4].isdigit()  # ISO 8601, with the offset
    # Rates from the second round on; the worker keeps checking out.
    assert rows_by_pid(reports[0])[processes.worker.pid]["checkouts_per_second"] is None
    later = rows_by_pid(reports[2])[processes.worker.pid]
    assert later["checkouts_per_second"] > 0
    assert later["checkout_timeouts_per_second"] == 0


@pytest.mark.slow
def test_poolstats_watch_prints_the_header_once_and_the_time_of_each_round(
    processes: Processes,
) -> None:
    env = demo_environment(url_of("default"))
    command = [sys.executable, "manage.py", "poolstats", "--watch", "0.2"]
    watch = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    try:
        assert watch.stdout is not None
        while sum(line.startswith("TOTAL") for line in lines) < 3:
            lines.append(watch.stdout.readline().rstrip("\n"))
    finally:
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=30) == 0
    assert [line.split()[:2] for line in lines].count(["HOST", "PID"]) == 1
    assert "CHECKOUTS/S" in lines[0] and "TIMEOUTS/S" in lines[0]
    times = [line for line in lines if re.fullmatch(r"\d\d:\d\d:\d\d", line)]
    assert len(times) == 3
    worker_rows = [line for line in lines if f" {processes.worker.pid} " in line]
    column = lines[0].index("CHECKOUTS/S")
    assert worker_rows[0][column:].split()[0] == "-"  # no rate before round 2
    assert float(worker_rows[-1][column:].split()[0]) > 0
    assert all(len(line) <= 100 for line in lines)


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


def test_poolstats_shortens_long_host_names_but_not_addresses() -> None:
    from selecto_pool._ops import report

    stats = {"pool_size": 1, "max_overflow": 0, "started_at": time.time()}
    long_name = "web-7f9c8d6b5-x2kzp.eu-west-1.compute.internal"
    address = "192.168.100.200"
    rows = [
        report.row(long_name, 123456, "default", stats),
        report.row(address, 123457, "default", stats),
    ]
    table = report.Table(wide=False)
    lines = table.render(rows, report.totals(rows))
    assert all(len(line) <= 100 for line in [table.header(), *lines])
    # The first DNS label, cut if need be; an address is cut, never split.
    assert lines[0].startswith("web-7f9c") and "eu-west-1" not in lines[0]
    assert lines[1].startswith("192.168")
