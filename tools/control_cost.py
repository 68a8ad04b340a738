"""What the control channel costs, and what a NOTIFY flood costs it.

    .venv/bin/python -m tools.control_cost [--no-cap]

Starts a throwaway PostgreSQL (or uses ``DATABASE_URL``) and, in this
process, two ORM pools of 4 connections on one database, one with
``control`` on and one with it off. It prints:

* the server connections of each (``pg_stat_activity``), and the private
  memory of the control backend next to a pooled one's (Linux, local server);
* the CPU this process spends while idle with each pool open;
* a checkout+checkin cycle's median with and without a responder running;
* a flood by a role without the key: NOTIFYs a second, the CPU this process
  spends on them, and the checkout median meanwhile.

Figures go to docs/operations.md ("What the channel costs").
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import django
import psycopg
from django.conf import settings

IDLE_SECONDS = 20.0
FLOOD_SECONDS = 5.0
CYCLES = 20000
# A role's flood: batches of 1000 NOTIFYs of 200+ bytes, as fast as it can.
FLOOD = """
import signal, sys, psycopg
sent = 0
def done(*_):
    print(sent)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    while True:
        conn.execute(
            "SELECT pg_notify('selecto_pool_control', repeat('x', 200) || g) "
            "FROM generate_series(1, 1000) g"
        )
        sent += 1000
"""


def main() -> None:
    from testproject.pgserver import LocalPostgres

    server = None
    url = os.environ.get("DATABASE_URL")
    if not url:
        server = LocalPostgres().start()
        url = server.url
    try:
        measure(url)
    finally:
        if server is not None:
            server.destroy()


def configure(url: str) -> None:
    import environ

    base = {**environ.Env.db_url_config(url), "ENGINE": "selecto_pool.backend"}
    pool = {"pool_size": 4, "max_overflow": 0}
    settings.configure(
        DATABASES={
            "default": {**base, "OPTIONS": {"pool": {**pool, "control": True}}},
            "quiet": {**base, "OPTIONS": {"pool": {**pool, "control": False}}},
        },
        INSTALLED_APPS=["selecto_pool"],
        SECRET_KEY="control-cost",
        USE_TZ=True,
    )
    django.setup()


def measure(url: str) -> None:
    configure(url)
    from selecto_pool import get_pool
    from selecto_pool._process import control

    if "--no-cap" in sys.argv:  # to compare: look at every message of a flood
        control.MAX_MESSAGES_PER_SECOND = 10**9

    pools = {alias: get_pool(alias) for alias in ("default", "quiet")}
    for pool in pools.values():
        pool.wait(timeout=10)
    time.sleep(1.0)
    info = {**psycopg.conninfo.conninfo_to_dict(url), "autocommit": True}
    with psycopg.connect(**info) as observer:
        rows = observer.execute(
            "SELECT application_name, pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        print("server connections:")
        for name, count in sorted(_count(rows).items()):
            print(f"  {name or '(pool)':40} {count}")
        control_pid = next(pid for name, pid in rows if name.startswith("selecto"))
        pool_pid = next(pid for name, pid in rows if not name)
        print(
            f"private memory: control backend {_private_kb(control_pid)} kB, "
            f"pooled backend {_private_kb(pool_pid)} kB"
        )

        with_responder = _idle_cpu()
        responder = control._live["default"]
        responder.stop()
        without = _idle_cpu()
        print(
            f"idle CPU of this process (2 pools open): {with_responder:.2f} ms/s "
            f"with a responder, {without:.2f} ms/s without"
        )
        pools["default"].close()
        from selecto_pool._process import registry

        registry.discard("default")

        quiet = pools["quiet"]
        baseline = _cycle_p50(quiet)
        print(f"checkout+checkin p50, no responder: {baseline:.2f} us")
        loud = get_pool("default")
        loud.wait(timeout=10)
        time.sleep(1.0)
        print(f"checkout+checkin p50, responder idle: {_cycle_p50(quiet):.2f} us")

        before = control.counters()["default"]["rejected"]
        flooder = subprocess.Popen(
            [sys.executable, "-c", FLOOD, url], stdout=subprocess.PIPE, text=True
        )
        time.sleep(1.0)  # connected and flooding
        cpu = time.process_time()
        time.sleep(FLOOD_SECONDS)
        cpu = time.process_time() - cpu
        during = _cycle_p50(quiet, seconds=FLOOD_SECONDS)
        flooder.terminate()
        sent = int(flooder.communicate()[0] or 0)
        seen = control.counters()["default"]["rejected"] - before
        elapsed = 1.0 + 2 * FLOOD_SECONDS
        print(
            f"flood from another process: {sent / elapsed:.0f} NOTIFY/s sent, "
            f"{seen / elapsed:.0f}/s dropped here (cap "
            f"{control.MAX_MESSAGES_PER_SECOND}/s looked at), this process's CPU "
            f"{cpu / FLOOD_SECONDS * 1000:.1f} ms/s, checkout+checkin p50 "
            f"meanwhile {during:.2f} us"
        )
        _per_message_cost()


def _count(rows: list[tuple[str, int]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, _ in rows:
        counts[name] = counts.get(name, 0) + 1
    return counts


def _private_kb(pid: int) -> str:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return "?"
    fields = dict(line.split(":", 1) for line in text.splitlines()[1:])
    private = sum(
        int(fields[key].split()[0]) for key in ("Private_Clean", "Private_Dirty")
    )
    return str(private)


def _idle_cpu() -> float:
    cpu = time.process_time()
    time.sleep(IDLE_SECONDS)
    return (time.process_time() - cpu) / IDLE_SECONDS * 1000.0


def _cycle_p50(pool: Any, seconds: float = 0.0) -> float:
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    while len(samples) < CYCLES or time.monotonic() < deadline:
        started = time.perf_counter()
        pool.putconn(pool.getconn())
        samples.append((time.perf_counter() - started) * 1e6)
    return statistics.median(samples)


def _per_message_cost() -> None:
    from django.core.signing import Signer

    from selecto_pool._process import control_messages as messages
    from selecto_pool.errors import ControlMessageRejected

    garbage = "x" * 7990
    forged = Signer(key="guess", salt="selecto_pool.control.request").sign_object(
        {"pad": "y" * 5000}
    )
    for name, payload in (("7990 bytes of garbage", garbage), ("forged", forged)):
        started = time.perf_counter()
        for _ in range(2000):
            with contextlib.suppress(ControlMessageRejected):
                messages.open_request(payload, time.time())
        cost = (time.perf_counter() - started) / 2000 * 1e6
        print(f"rejecting {name} ({len(payload)} bytes): {cost:.1f} us")


if __name__ == "__main__":
    main()
