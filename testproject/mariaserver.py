"""A throwaway MariaDB server for the test suite, Django's suite and the benchmarks.

The binaries are Debian's ``mariadb-server`` package (``python3 dev.py test``
installs it when run as root on Debian). The server has a directory of its own
(``mariadb-install-db``), listens on a private unix socket and on a free TCP
port of 127.0.0.1, runs as an unprivileged account when started as root, and
has one account with password authentication (``selecto``), so that tests
can restart it, kill its sessions and check that the password never leaks.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from .pgserver import _make_traversable, _service_account, free_port

USER = "selecto"
# Small and unsafe on purpose: the data is thrown away.
FAST_SETTINGS = (
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=8M",
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--skip-log-bin",
    "--skip-name-resolve",
    "--max-connections=300",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
)


def find_binaries() -> tuple[Path, Path] | None:
    """``mariadbd`` and ``mariadb-install-db``, or None when not installed."""
    server = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    install = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
    if Path(server).exists() and Path(install).exists():
        return Path(server), Path(install)
    return None


class LocalMariaDB:
    """One MariaDB server in a directory of its own, on loopback only."""

    def __init__(self, base_dir: Path | None = None, port: int | None = None):
        binaries = find_binaries()
        if binaries is None:
            raise RuntimeError(
                "no MariaDB server: install Debian's mariadb-server package"
            )
        self.server_bin, self.install_bin = binaries
        self._owns_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="selecto-maria-"))
        self.data_dir = self.base_dir / "data"
        self.socket = self.base_dir / "mysqld.sock"
        self.log_file = self.base_dir / "server.log"
        self.port = port or free_port()
        self.account = _service_account()
        self.password = self._load_or_create_password()
        self.process: subprocess.Popen[bytes] | None = None

    # -- how to reach it ----------------------------------------------------
    @property
    def url(self) -> str:
        """A DATABASE_URL (django-environ's ``mysql://``) for ``dbname``."""
        return self.url_for("mysql")

    def url_for(self, dbname: str) -> str:
        return (
            f"mysql://{USER}:{quote(self.password, safe='')}"
            f"@127.0.0.1:{self.port}/{dbname}"
        )

    def connect_kwargs(self, dbname: str | None = None) -> dict[str, object]:
        """mysqlclient ``connect()`` arguments, over TCP with the password."""
        kwargs: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": USER,
            "password": self.password,
        }
        if dbname:
            kwargs["database"] = dbname
        return kwargs

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> LocalMariaDB:
        first = not (self.data_dir / "mysql").exists()
        if first:
            self._install()
        # Its own temporary directory: in /tmp, the server's files vanish
        # under anything that cleans /tmp (e.g. a test suite's temp dirs).
        tmp_dir = self.base_dir / "tmp"
        tmp_dir.mkdir(exist_ok=True)
        if self.account:
            os.chown(tmp_dir, self.account.pw_uid, self.account.pw_gid)
        self.process = subprocess.Popen(
            [
                str(self.server_bin),
                "--no-defaults",
                f"--datadir={self.data_dir}",
                f"--socket={self.socket}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--pid-file={self.base_dir / 'mysqld.pid'}",
                f"--log-error={self.log_file}",
                f"--tmpdir={tmp_dir}",
                *FAST_SETTINGS,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **self._as_account(),  # type: ignore[arg-type]
        )
        self._wait_until_accepting()
        if first:
            self._create_account()
        return self

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): sessions are closed by the server."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self) -> None:
        """A crash (SIGKILL): sessions end without a goodbye."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.kill()
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalMariaDB:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()

    # -- internals ------------------------------------------------------------
    def _as_account(self) -> dict[str, int]:
        if self.account is None:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid}

    def _load_or_create_password(self) -> str:
        secret_file = self.base_dir / "selecto.password"
        if secret_file.exists():
            return secret_file.read_text().strip()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(18)
        secret_file.write_text(password)
        secret_file.chmod(0o600)
        return password

    def _install(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.account:
            _make_traversable(self.base_dir)
            for path in (self.base_dir, self.data_dir):
                os.chown(path, self.account.pw_uid, self.account.pw_gid)
        result = subprocess.run(
            [
                str(self.install_bin),
                "--no-defaults",
                f"--datadir={self.data_dir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--innodb-log-file-size=8M",
            ],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            cwd=self.base_dir,
            **self._as_account(),  # type: ignore[arg-type]
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"mariadb-install-db failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )

    def _create_account(self) -> None:
        """``selecto``, with a password, allowed everything (test databases,
        KILL, SET GLOBAL): created over the socket as root, who has none."""
        import MySQLdb

        conn = MySQLdb.connect(unix_socket=str(self.socket), user="root")
        try:
            cursor = conn.cursor()
            for host in ("127.0.0.1", "localhost"):
                cursor.execute(
                    f"CREATE USER '{USER}'@'{host}' IDENTIFIED BY %s", [self.password]
                )
                cursor.execute(
                    f"GRANT ALL ON *.* TO '{USER}'@'{host}' WITH GRANT OPTION"
                )
        finally:
            conn.close()

    def _wait_until_accepting(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                exited = self.process is not None and self.process.poll() is not None
                if exited or time.monotonic() > deadline:
                    log = (
                        self.log_file.read_text()[-4000:]
                        if self.log_file.exists()
                        else ""
                    )
                    raise RuntimeError(f"mariadbd did not start:\n{log}") from None
                time.sleep(0.05)
