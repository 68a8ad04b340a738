"""The PostgreSQL servers the test session runs against.

``DATABASE_URL`` when set; otherwise a throwaway server started here, once per
test process, and stopped at exit. Tests that restart or stop a server get
their own (``LocalPostgres`` in a fixture), never the shared one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import psycopg

from testproject.pgserver import LocalPostgres

from . import clients

_server: LocalPostgres | None = None
_spare: LocalPostgres | None = None


def _started() -> LocalPostgres:
    server = LocalPostgres().start()
    owner = os.getpid()
    atexit.register(lambda: os.getpid() == owner and server.destroy())
    return server


def database_url() -> str:
    """The server the suite's test database lives on."""
    global _server
    if url := os.environ.get("DATABASE_URL"):
        return url
    if _server is None:
        _server = _started()
    return _server.url


def spare_server() -> LocalPostgres:
    """A second, local server that tests may stop and start (alias "spare")."""
    global _spare
    if _spare is None:
        _spare = _started()
    return _spare


def local_server() -> LocalPostgres | None:
    """The suite's own server, when it started one (not with DATABASE_URL)."""
    return _server


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


def begin_fast_shutdown(server: LocalPostgres) -> None:
    """``pg_ctl stop -m fast`` without its fork: a signal to the postmaster,
    which terminates every session and stops (see ``wait_until_stopped``)."""
    pid = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGINT)


def stopped(server: LocalPostgres) -> bool:
    return not (server.data_dir / "postmaster.pid").exists()


def wait_until_stopped(server: LocalPostgres, timeout: float = 30) -> None:
    clients.wait_for(lambda: not (server.data_dir / "postmaster.pid").exists(), timeout)


@contextlib.contextmanager
def login_role(server: LocalPostgres, name: str, password: str) -> Iterator[None]:
    """A role that may log in to ``server`` with ``password``, for the block;
    its sessions are ended and the role dropped afterwards."""
    with psycopg.connect(**server.conninfo(), autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {name}")
        conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    try:
        yield
    finally:
        with psycopg.connect(**server.conninfo(), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE usename = %s",
                [name],
            )
            conn.execute(f"DROP ROLE {name}")
