"""Debian's PgBouncer on loopback, in transaction mode, in front of a server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from testproject.pgserver import SUPERUSER, LocalPostgres, _service_account, free_port

BINARY = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def available() -> bool:
    return Path(BINARY).exists()


class PgBouncer:
    """``pool_mode = transaction`` with round-robin server connections, so that
    consecutive transactions of one client land on different backends.

    Two backends at most: with a client pool of three connections taken in
    turn, a client connection meets the other backend on its next use.
    """

    def __init__(self, server: LocalPostgres, pool_size: int = 2):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="selecto-bouncer-"))
        (self.dir / "users.txt").write_text(f'"{SUPERUSER}" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={server.port} user={SUPERUSER} "
            f"password={server.password}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'users.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            "server_round_robin = 1\n"
            "max_client_conn = 500\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
        )
        account = _service_account()
        if account:
            for path in [self.dir, *self.dir.iterdir()]:
                os.chown(path, account.pw_uid, account.pw_gid)
        user = {"user": account.pw_uid, "group": account.pw_gid} if account else {}
        self.process = subprocess.Popen(
            [BINARY, str(self.dir / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **user,  # type: ignore[arg-type]
        )
        self._wait_until_listening()

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError as exc:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    log = self.dir / "pgbouncer.log"
                    text = log.read_text() if log.exists() else "no log"
                    raise RuntimeError(f"pgbouncer did not start: {text}") from exc
                time.sleep(0.05)

    def open_server_connections(self, dbname: str, user: str, count: int) -> None:
        """Have PgBouncer open ``count`` server connections.

        It opens one only when no idle one is left, i.e. when transactions
        overlap: sequential clients would all share a single backend, and
        round robin would have nothing to rotate.
        """
        clients = [
            psycopg.connect(
                host="127.0.0.1", port=self.port, dbname=dbname, user=user, password="x"
            )
            for _ in range(count)
        ]
        try:
            for client in clients:
                client.execute("SELECT 1")  # a transaction kept open...
            for client in clients:
                client.commit()  # ...and ended cleanly: PgBouncer keeps the backend
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
