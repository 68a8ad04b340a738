"""A server that refuses logins is not stormed; one that restarts is back fast.

Failed logins are counted where an operator would see them, in the server's
log. A server that is not there (refused or timed-out connections) or says
it is starting up or shutting down (57P03) gets a probe every half second,
which is what brings a pool back right after a restart; a server that
answers and refuses the login gets attempts backing off to
``login_retry_max``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import DatabaseError

import selecto_pool as sp
from selecto_pool._conn.outages import refused_login
from selecto_pool.backend.base import DatabaseWrapper
from testproject.pgserver import LocalPostgres, free_port

from .support.clients import wait_for
from .support.database import wrapper_for_settings
from .support.postgres import (
    accepting_at,
    begin_smart_shutdown,
    login_role,
    wait_until_stopped,
)

ROLE = "storm"
RIGHT, WRONG = "the-right-one-7Qx", "rotated-away-3Kd"
CAP = 2.0  # login_retry_max, short to keep the test short


class FailedLogins:
    """The failed logins of ``ROLE`` in the server's log."""

    def __init__(self, server: LocalPostgres):
        self.log_file = server.log_file

    def count(self) -> int:
        needle = f'password authentication failed for user "{ROLE}"'
        return self.log_file.read_text(errors="replace").count(needle)


@pytest.fixture
def role(spare_server: LocalPostgres) -> Iterator[LocalPostgres]:
    with login_role(spare_server, ROLE, RIGHT):
        yield spare_server


def request(wrapper: DatabaseWrapper) -> None:
    """One ORM query and the end of the request, as Django does it."""
    try:
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        wrapper.close()


@pytest.mark.slow
# control: the control connection's attempts go through the same backoff.
@pytest.mark.parametrize("control", [False, True], ids=["pool", "pool+control"])
def test_refused_logins_back_off_to_login_retry_max(
    role: LocalPostgres,
    django_db_blocker: Any,
    caplog: pytest.LogCaptureFixture,
    control: bool,
) -> None:
    caplog.set_level(logging.WARNING, logger="selecto_pool")
    settings_dict = {
        "ENGINE": "selecto_pool.backend",
        "NAME": "postgres",
        "USER": ROLE,
        "PASSWORD": WRONG,  # the password was rotated on the server
        "HOST": "127.0.0.1",
        "PORT": role.port,
        "OPTIONS": {
            "pool": {
                "pool_size": 3,
                "max_overflow": 2,
                "checkout_timeout": 0.3,
                "login_retry_max": CAP,
                "control": control,
            }
        },
    }
    wrapper = wrapper_for_settings(settings_dict, "storm")
    wrapper.inc_thread_sharing()  # used by the client thread below
    logins = FailedLogins(role)
    errors: list[str] = []
    stop = threading.Event()

    def client() -> None:
        """A user who keeps reloading the page."""
        while not stop.is_set():
            try:
                request(wrapper)
            except DatabaseError as exc:
                errors.append(str(exc))
            time.sleep(0.05)

    with django_db_blocker.unblock():
        before = logins.count()
        reloading = threading.Thread(target=client)
        reloading.start()
        try:
            time.sleep(0.5 + 1 + CAP)  # the backoff's first steps
            ramp = logins.count() - before
            start = logins.count()
            window = 4 * CAP
            time.sleep(window)
            during = logins.count() - start
            pool = wrapper.pool
            assert pool is not None and pool.outage.refusing
            # What the control connection will consult: no attempt is due
            # before the step is over, and an early one never reaches the
            # server.
            assert pool.outage.retry_delay() <= CAP * 1.1
            if pool.outage.retry_delay() > 0.2:
                with pytest.raises(psycopg.OperationalError, match="waits"):
                    pool.connection_class.connect(**wrapper.get_connection_params())
            # The password is set right: the pool is back within one step.
            with psycopg.connect(**role.conninfo(), autocommit=True) as conn:
                conn.execute(f"ALTER ROLE {ROLE} PASSWORD '{WRONG}'")
            fixed = time.monotonic()
            wait_for(lambda: bool(errors) and not _fails(wrapper), CAP * 1.1 + 2)
            recovered = time.monotonic() - fixed
        finally:
            stop.set()
            reloading.join(10)
            wrapper.close()
            wrapper.close_pool()
    print(
        f"\nlogins refused: {ramp} in the first {0.5 + 1 + CAP:.1f} s, then "
        f"{during} in {window:.0f} s (login_retry_max {CAP} s); connected "
        f"{recovered:.2f} s after the password was fixed; "
        f"{len(errors)} failed requests"
    )
    assert during <= window / CAP + 1, "the server's log is flooded"
    # Each refused attempt is logged once by the pool, naming the reason.
    refused = [
        record
        for record in caplog.records
        if record.name == "selecto_pool.pool"
        and "cannot connect: the server refused" in record.getMessage()
    ]
    assert ramp + during <= len(refused) <= logins.count() - before
    assert any("refuses the login" in error for error in errors)
    assert all(WRONG not in error and RIGHT not in error for error in errors)


def _fails(wrapper: DatabaseWrapper) -> bool:
    try:
        request(wrapper)
    except DatabaseError:
        return True
    return False


@pytest.mark.slow
def test_a_server_shutting_down_is_probed_fast_and_back_fast(
    spare_server: LocalPostgres,
) -> None:
    """57P03 is no refused login: the probes go on every half second."""
    pool = sp.start_pool(
        {**spare_server.conninfo(), "application_name": "selecto-not-yet"},
        pool_size=2,
        max_overflow=0,
        health_check_interval=0.1,
        name="not-yet",
    )
    held = psycopg.connect(**spare_server.conninfo(), autocommit=True)
    try:
        pool.wait(timeout=5)
        begin_smart_shutdown(spare_server)
        held.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE application_name = 'selecto-not-yet'"
        )
        wait_for(lambda: pool.outage.failures > 0, timeout=3)
        time.sleep(3.0)
        attempts = pool.outage.failures
        assert "shutting down" in pool.outage.last_error
        assert not pool.outage.refusing
        assert pool.outage.retry_delay() <= 0.5
        held.close()
        wait_until_stopped(spare_server)
        accepted = accepting_at(spare_server)
        spare_server.start()
        up = accepted()
        wait_for(lambda: pool.stats().idle == 2, timeout=5)
        refilled = time.monotonic() - up
    finally:
        held.close()
        sp.stop_pool(pool, timeout=1)
        if not spare_server.is_running():
            spare_server.start()
    print(
        f"\n57P03: {attempts} attempts in the 3 s the server said it was "
        f"shutting down; the pool full again {refilled:.3f} s after it accepted"
    )
    # A backoff would have made 3 (after 0.5, 1 and 2 s).
    assert attempts >= 5
    assert refilled < 1.0


@pytest.mark.parametrize(
    ("case", "changes", "refused"),
    [
        ("wrong password, 28P01", {"password": WRONG}, True),
        ("no such database, 3D000", {"dbname": "nowhere"}, True),
        ("role can't log in, 28000", {"user": f"{ROLE}_nologin"}, True),
        ("too many connections, 53300", {"user": f"{ROLE}_limited"}, True),
        ("nothing listening", {"port": "free"}, False),
    ],
)
def test_a_refused_login_is_told_from_an_absent_server(
    role: LocalPostgres, case: str, changes: dict[str, Any], refused: bool
) -> None:
    with psycopg.connect(**role.conninfo(), autocommit=True) as conn:
        for name, attributes in (("nologin", "NOLOGIN"), ("limited", "LOGIN")):
            conn.execute(f"DROP ROLE IF EXISTS {ROLE}_{name}")
            conn.execute(
                f"CREATE ROLE {ROLE}_{name} {attributes} PASSWORD '{RIGHT}'"
                " CONNECTION LIMIT 0"
            )
    try:
        params = {**role.conninfo(), "user": ROLE, "password": RIGHT, **changes}
        if params["port"] == "free":
            params["port"] = free_port()
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(**params, connect_timeout=2)
        assert refused_login(info.value) is refused, str(info.value)
    finally:
        with psycopg.connect(**role.conninfo(), autocommit=True) as conn:
            conn.execute(f"DROP ROLE {ROLE}_nologin, {ROLE}_limited")
