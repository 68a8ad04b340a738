"""The PostgreSQL the benchmark runs against, and what it sees of each run.

Without ``DATABASE_URL`` a private server (``testproject.pgserver``) is
started and destroyed afterwards, on errors and Ctrl-C too. Either way the
runs use a database of their own, ``selecto_bench``, created fresh and dropped
at the end, so that every configuration sees the same tables and statistics.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import psycopg

DATABASE = "selecto_bench"
#: Seconds between two looks at pg_stat_activity during a run.
SAMPLE_INTERVAL = 0.02


@dataclass(frozen=True)
class Target:
    """Where the runs connect (URLs hold a password: never print them)."""

    url: str
    admin_url: str
    local: bool


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def provision(url: str | None) -> Iterator[Target]:
    """A fresh benchmark database, on ``url``'s server or a private one."""
    server = None
    if not url:
        from testproject.pgserver import LocalPostgres

        server = LocalPostgres()
        try:
            server.start()
        except BaseException:
            server.destroy()
            raise
        url = server.url
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {DATABASE}")
        try:
            yield Target(with_database(url, DATABASE), url, local=server is not None)
        finally:
            if server is None:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    finally:
        if server is not None:
            server.destroy()


def server_version(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


class ConnectionSampler:
    """Counts the server connections of one run, by ``application_name``.

    Runs in the parent process (not the measured one), every
    ``SAMPLE_INTERVAL``; short-lived connections (no pooling) can fall between
    two samples, so their peak is a lower bound.
    """

    def __init__(self, url: str, application_names: list[str]):
        self._conn = psycopg.connect(
            url, autocommit=True, application_name="selecto_bench:sampler"
        )
        self._names = application_names
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY(%s)"
        while not self._stop.wait(SAMPLE_INTERVAL):
            try:
                row = self._conn.execute(query, [self._names]).fetchone()
            except psycopg.Error:
                return  # the run's result says what went wrong
            self.peak = max(self.peak, int(row[0]) if row else 0)
