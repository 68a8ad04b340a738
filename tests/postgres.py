"""The PostgreSQL servers the test session runs against.

``DATABASE_URL`` when set; otherwise a throwaway server started here, once per
test process, and stopped at exit. Tests that restart or stop a server get
their own (``LocalPostgres`` in a fixture), never the shared one.
"""

from __future__ import annotations

import atexit
import os

from testproject.pgserver import LocalPostgres

_server: LocalPostgres | None = None


def database_url() -> str:
    global _server
    if url := os.environ.get("DATABASE_URL"):
        return url
    if _server is None:
        _server = LocalPostgres().start()
        owner = os.getpid()
        atexit.register(lambda: os.getpid() == owner and _server.destroy())
    return _server.url
