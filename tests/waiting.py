"""Bounded waits for fault tests: a condition, a server accepting sessions."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import psycopg

from testproject.pgserver import LocalPostgres


def wait_for(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``condition()`` held; fails the test after ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "condition not met in time"
        time.sleep(0.005)
    return time.monotonic() - started


def accepting_at(server: LocalPostgres) -> Callable[[], float]:
    """Poll ``server`` from now on; the returned callable gives when it first
    accepted a session (monotonic), waiting for that if need be."""
    accepted: list[float] = []

    def poll() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                psycopg.connect(**server.conninfo(), connect_timeout=2).close()
            except psycopg.Error:
                time.sleep(0.005)
                continue
            accepted.append(time.monotonic())
            return

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()

    def when() -> float:
        poller.join(60)
        return accepted[0]

    return when


def begin_smart_shutdown(server: LocalPostgres) -> None:
    """``pg_ctl stop -m smart`` without waiting: while a session stays open,
    the server answers new ones with 57P03 ("the database system is shutting
    down") instead of going away."""
    pid = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGTERM)


def wait_until_stopped(server: LocalPostgres, timeout: float = 30) -> None:
    wait_for(lambda: not (server.data_dir / "postmaster.pid").exists(), timeout)
