"""Which ``pgserver run`` serves a data directory, for a second shell to find.

``python -m testproject.pgserver run --data DIR`` writes ``DIR/run.json``
(mode 0600) before it starts PostgreSQL and removes it once PostgreSQL has
stopped: the pid of the ``run`` process, PostgreSQL's port (a free one, new on
every start) and the URL of what the command serves. Readers trust it only
while that process lives and PostgreSQL is ready on that port.

``testproject/settings.py`` reads it when DATABASE_URL is unset, so that
``manage.py poolstats`` in a second shell reaches the demo's database;
``dev.py demo`` reads it to refuse a second demo on the same data. The
password stays in ``superuser.password`` (0600, next to it), never printed.

Standard library only: ``dev.py`` imports this before ``.venv`` exists.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

STATE_FILE = "run.json"
PASSWORD_FILE = "superuser.password"
SUPERUSER = "postgres"
#: Where ``dev.py demo`` keeps its cluster, if not ``.pgdata`` in the repository.
DATA_ENV = "SELECTO_DEMO_DATA"


@dataclass(frozen=True)
class Run:
    """A ``pgserver run`` whose process and PostgreSQL server are both alive."""

    pid: int
    port: int
    serves: str | None

    def describe(self) -> str:
        what = f"at {self.serves}" if self.serves else f"on port {self.port}"
        return f"{what} (pid {self.pid})"


def demo_data_dir(root: Path) -> Path:
    """``$SELECTO_DEMO_DATA`` (relative to ``root``), or ``root/.pgdata``."""
    return root / (os.environ.get(DATA_ENV) or ".pgdata")


def database_url(password: str, port: int, dbname: str = "postgres") -> str:
    """The superuser's URL of ``dbname`` on 127.0.0.1:``port``."""
    secret = quote(password, safe="")
    return f"postgres://{SUPERUSER}:{secret}@127.0.0.1:{port}/{dbname}"


def write(base_dir: Path, port: int, serves: str | None) -> None:
    """Record that this process runs the server of ``base_dir`` on ``port``."""
    state = {"pid": os.getpid(), "port": port, "serves": serves}
    partial = base_dir / f"{STATE_FILE}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    # Created 0600 from the start, then renamed: never half-written, never
    # readable by others (it points at the password file's server).
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(state, file)
    partial.replace(base_dir / STATE_FILE)


def remove(base_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (base_dir / STATE_FILE).unlink()


def recorded(base_dir: Path) -> Run | None:
    """The run ``base_dir`` records, alive or not (``None``: none, unreadable)."""
    try:
        state = json.loads((base_dir / STATE_FILE).read_text())
        serves = state.get("serves")
        run = Run(int(state["pid"]), int(state["port"]), serves and str(serves))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    # os.kill() takes 0 and negative pids as process groups.
    return run if run.pid > 1 and 0 < run.port < 65536 else None


def running(base_dir: Path) -> Run | None:
    """The live run of ``base_dir``; ``None`` if none, or if its state is stale.

    Stale: the ``run`` process is gone (killed before it could clean up), or
    PostgreSQL is not up and ready on the recorded port.
    """
    run = recorded(base_dir)
    if run is None or not alive(run.pid):
        return None
    return run if server_pid(base_dir, port=run.port) is not None else None


def running_database_url(base_dir: Path) -> str | None:
    """The URL of the live run's ``postgres`` database, if there is one."""
    run = running(base_dir)
    if run is None:
        return None
    try:
        password = (base_dir / PASSWORD_FILE).read_text().strip()
    except OSError:
        return None
    return database_url(password, run.port)


def server_pid(base_dir: Path, port: int | None = None) -> int | None:
    """The postmaster's pid if PostgreSQL runs on ``base_dir`` (on ``port``).

    From ``postmaster.pid``, whose lines are documented: pid, data directory,
    start time, port, socket directory, listen address, shared memory key,
    status.
    """
    try:
        lines = (base_dir / "data" / "postmaster.pid").read_text().splitlines()
        pid, server_port, status = int(lines[0]), int(lines[3]), lines[7].strip()
    except (OSError, ValueError, IndexError):
        return None
    if port is not None and (server_port != port or status != "ready"):
        return None
    return pid if alive(pid) else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True
