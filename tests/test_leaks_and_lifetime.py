"""Leaks and lifetime: connections held too long, too old, or held at exit.

Leak detection names the code that forgot a connection; ``max_lifetime``
retires connections in use or idle; at interpreter exit the pool waits up to
``exit_timeout`` for checked-out connections (real exiting processes,
``tests/support/exiting.py``). The figures are printed (``-s``).
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from typing import Any

import pytest

import selecto_pool as sp
from selecto_pool import SelectoPool
from selecto_pool._ops import metrics as _metrics

from .support.clients import wait_for
from .support.database import Observer, conninfo_of
from .support.processes import ROOT


# -- leaks --------------------------------------------------------------------------
def forget_to_return(pool: SelectoPool) -> Any:
    """The code a leak report must point at."""
    return sp.checkout(pool)


LEAK_THRESHOLD = 0.2


def test_leak_detection_logs_the_checkout_stack_once(
    transactional_db: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="selecto_pool")
    pool = sp.start_pool(
        conninfo_of("default"),
        pool_size=1,
        leak_detection_threshold=LEAK_THRESHOLD,
        name="leaky",
    )
    try:
        checked_out = time.monotonic()
        conn = forget_to_return(pool)
        wait_for(lambda: pool.stats().leaks == 1, timeout=3)
        reported_after = time.monotonic() - checked_out
        time.sleep(0.5)  # more scans: still reported once
        reports = [r for r in caplog.records if "leak_detection_threshold" in r.message]
        assert len(reports) == 1 and pool.stats().leaks == 1
        assert reports[0].levelno == logging.WARNING
        assert "in forget_to_return" in reports[0].message
        assert "test_leak_detection_logs_the_checkout_stack_once" in reports[0].message
        metrics = _metrics.render(_metrics.families({"leaky": pool.stats()}, {}))
        leaks = r'^selecto_pool_leaks_total\{alias="leaky",[^}]*\} 1$'
        assert re.search(leaks, metrics, re.MULTILINE)
        sp.checkin(pool, conn)
        assert "came back after" in caplog.records[-1].message
    finally:
        sp.stop_pool(pool, timeout=1)
    print(
        f"\nleak: reported {reported_after:.3f} s after checkout "
        f"(threshold {LEAK_THRESHOLD} s)"
    )
    # Not before the threshold. After it, within a scan (every threshold / 2)
    # plus up to 0.7 s of waiting for the CPU on a loaded machine: well before
    # the slowest scan period (5 s) or a health sweep (30 s by default).
    assert LEAK_THRESHOLD <= reported_after < LEAK_THRESHOLD * 1.5 + 0.7

    quiet = sp.start_pool(conninfo_of("default"), pool_size=1)
    try:
        assert quiet._leaks is None  # off by default: no stack is captured
        assert quiet.stats().leaks == 0
    finally:
        sp.stop_pool(quiet, timeout=1)


# -- max_lifetime -------------------------------------------------------------------
def test_max_lifetime_holds_at_checkout_and_while_idle(observer: Observer) -> None:
    def backend(pool: SelectoPool) -> int:
        return sp.execute(pool, "SELECT pg_backend_pid()").rows[0][0]

    info = {**conninfo_of("default"), "application_name": "selecto-lifetime"}
    options = {"pool_size": 1, "max_overflow": 0, "max_lifetime": 0.3}
    at_checkout = sp.start_pool(info, health_check_interval=0, **options)
    try:
        first = backend(at_checkout)
        time.sleep(0.4)  # idle past its lifetime, and no sweep
        assert backend(at_checkout) != first
    finally:
        sp.stop_pool(at_checkout, timeout=1)

    idle = sp.start_pool(info, health_check_interval=0.1, **options)
    try:
        idle.wait(timeout=5)
        first = set(observer.connections_of("selecto-lifetime"))
        # Swept every 0.1 s, so replaced about 0.3 s after opening. Without
        # the sweep it would never be: the wait only has to end somewhere.
        wait_for(
            lambda: first.isdisjoint(observer.connections_of("selecto-lifetime")), 5
        )
        assert idle.stats().checkouts == 0
    finally:
        sp.stop_pool(idle, timeout=1)


# -- interpreter exit ---------------------------------------------------------------
EXIT_TIMEOUT = 2.5
# tests/support/exiting.py's transaction commits this long after exit began.
FINISHING = 0.5
# After the wait, closing the pool (its control responder wakes at once when
# stopped), more on a loaded machine. A pool that
# didn't give up after exit_timeout would wait for good: the connection is
# held for an hour.
CLOSING = 1.5


# Measured up to when the pools' exit handler returned: exit_timeout bounds
# that; the interpreter's teardown afterwards (0.15 s, but seconds on a loaded
# 2-core machine) is bounded by the subprocess timeout only.
@pytest.mark.parametrize(
    ("mode", "at_least", "below"),
    [
        # Nothing held (the main thread's connection is given back first):
        # no wait for exit_timeout.
        ("idle", 0.0, EXIT_TIMEOUT),
        # Waits for the transaction, and no longer: not for exit_timeout.
        ("finishing", FINISHING, EXIT_TIMEOUT),
        # Waits exit_timeout for a connection never returned, then gives up.
        ("held", EXIT_TIMEOUT, EXIT_TIMEOUT + CLOSING),
    ],
)
def test_exit_waits_for_checked_out_connections_within_exit_timeout(
    demo_env: dict[str, str],
    observer: Observer,
    mode: str,
    at_least: float,
    below: float,
) -> None:
    observer.conn.execute("CREATE TABLE exit_ledger (note text)")
    url = f"{demo_env['DATABASE_URL']}?exit_timeout={EXIT_TIMEOUT}"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.support.exiting", mode],
            cwd=ROOT,
            env={**demo_env, "DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=30,
        )
        exited = time.time()
        assert done.returncode == 0, done.stderr
        marks = dict(line.split() for line in done.stdout.splitlines())
        took = float(marks["stopped"]) - float(marks["exiting"])
        committed = observer.scalar("SELECT count(*) FROM exit_ledger")
    finally:
        observer.conn.execute("DROP TABLE exit_ledger")
    print(
        f"\nexit ({mode}, exit_timeout {EXIT_TIMEOUT} s): pools stopped in "
        f"{took:.3f} s, process gone in {exited - float(marks['exiting']):.3f} s"
    )
    assert at_least <= took < below
    for noise in ("Traceback", "Exception ignored", "couldn't stop", "Warning:"):
        assert noise not in done.stderr
    assert ("still checked out" in done.stderr) == (mode == "held")
    assert committed == (mode == "finishing")
