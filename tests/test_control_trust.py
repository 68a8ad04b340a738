"""The control channel against a role that may log in and nothing else.

Any role that can connect may LISTEN and NOTIFY on ``selecto_pool_control``.
Such a role must not be able to silence a process, clear its caches, read
its stats, or make ``poolstats`` print what it wants.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.core.signing import Signer
from django.db import connections
from django.test import override_settings

from selecto_pool import get_pool

from .support.database import Observer, conninfo_of
from .support.hostile import (
    extra_alias,
    leaked_reply_channel,
    low_privilege_role,
    notify,
    poolstats,
    wait_until_answering,
)

ALIAS = "tiny"


@pytest.fixture
def intruder_info(observer: Observer) -> Iterator[dict[str, Any]]:
    with low_privilege_role(observer.conn, ALIAS) as info:
        yield info


@pytest.fixture
def intruder(intruder_info: dict[str, Any]) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(**intruder_info, autocommit=True) as conn:
        yield conn


@pytest.fixture
def answering() -> dict[str, Any]:
    """The tiny pool's responder in this process, answering."""
    get_pool(ALIAS)
    return wait_until_answering(ALIAS)


def counters() -> dict[str, int]:
    from selecto_pool._process import control

    return control.counters()[ALIAS]


HOSTILE_PAYLOADS = [
    "[" * 3000,  # json.loads: RecursionError
    "not json",
    "{}",
    json.dumps({"op": "stats", "reply": 5}),
    json.dumps({"op": "stats", "reply": ["selecto_pool_reply_" + "0" * 32]}),
    "x" * 7990,
    "\x01" * 10,
    # Signed, but with a key of another project.
    Signer(
        key="another project's key", salt="selecto_pool.control.request"
    ).sign_object({"op": "stats"}),
]


def test_hostile_notifies_cannot_silence_a_process(
    intruder: psycopg.Connection[Any], answering: dict[str, Any]
) -> None:
    for payload in HOSTILE_PAYLOADS:
        notify(intruder, payload)
    time.sleep(0.5)
    assert wait_until_answering(ALIAS, timeout=3)["status"] == "ok"
    seen = counters()
    assert seen["rejected"] >= len(HOSTILE_PAYLOADS)
    assert seen["errors"] == 0 and seen["restarts"] == 0


def test_anyone_cannot_clear_caches(
    intruder: psycopg.Connection[Any], answering: dict[str, Any]
) -> None:
    pool = get_pool(ALIAS)
    pool.wait(timeout=5)
    held = [pool.getconn() for _ in range(pool.options.pool_size)]
    for conn in held:
        conn.execute("DEALLOCATE ALL")
        conn.execute("PREPARE trust_probe AS SELECT 1")
    for conn in held:
        pool.putconn(conn)
    unsigned = json.dumps({"op": "clear", "reply": "selecto_pool_reply_" + "0" * 32})
    started = time.monotonic()
    for _ in range(82):
        notify(intruder, unsigned)
    assert time.monotonic() - started < 2
    time.sleep(1.0)
    held = [pool.getconn() for _ in range(pool.options.pool_size)]
    try:
        prepared = [
            conn.execute(
                "SELECT count(*) FROM pg_prepared_statements WHERE name = 'trust_probe'"
            ).fetchone()[0]
            for conn in held
        ]
    finally:
        for conn in held:
            conn.execute("DEALLOCATE ALL")
            pool.putconn(conn)
    assert prepared == [1] * pool.options.pool_size


def test_stats_never_go_to_a_channel_of_the_senders_choosing(
    intruder: psycopg.Connection[Any], answering: dict[str, Any]
) -> None:
    channel = "selecto_pool_reply_" + "a" * 32
    intruder.execute(f"LISTEN {channel}")
    notify(intruder, json.dumps({"op": "stats", "reply": channel, "alias": None}))
    notify(intruder, json.dumps({"op": "stats", "reply": channel, "alias": ALIAS}))
    received = list(intruder.notifies(timeout=1.5))
    assert received == []


def test_a_listener_learns_neither_the_reply_channel_nor_the_stats(
    intruder: psycopg.Connection[Any], answering: dict[str, Any]
) -> None:
    """It sees the signed request; replaying it gets it nothing."""
    intruder.execute("LISTEN selecto_pool_control")
    report = poolstats(ALIAS)
    [request] = [n.payload for n in intruder.notifies(timeout=1.0, stop_after=1)]
    assert "selecto_pool_reply_" not in request
    assert report["processes"][0]["status"] == "ok"
    before = counters()
    notify(intruder, request)  # a replay
    time.sleep(0.5)
    after = counters()
    assert after["requests"] == before["requests"]
    assert after["rejected"] == before["rejected"] + 1


@pytest.fixture
def silent_responder(observer: Observer) -> Iterator[int]:
    """A process of this project that listens but never answers (stopped)."""
    info = {**conninfo_of(ALIAS), "application_name": "selecto_pool:ctl:4242:tiny"}
    with psycopg.connect(**info, autocommit=True) as conn:
        conn.execute("LISTEN selecto_pool_control")
        yield 4242


def test_poolstats_prints_no_forged_row_and_survives_garbage(
    intruder: psycopg.Connection[Any],
    answering: dict[str, Any],
    silent_responder: int,
) -> None:
    real = connections[ALIAS].get_connection_params()
    backends = psycopg.connect(**{**real, "autocommit": True})
    with backends:
        [[responder]] = backends.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            [f"selecto_pool:ctl:{os.getpid()}:{ALIAS}"],
        ).fetchall()
    forged_row = {
        "host": "db-admin-laptop",
        "pid": 31337,
        "alias": ALIAS,
        "control_backend": responder,
        "backend": responder,
        "stats": {**answering, "in_use": 9999, "started_at": time.time()},
    }
    intruder.execute("LISTEN selecto_pool_control")

    def answer_first() -> None:
        # notifies() holds the connection: collect, then send.
        for request in list(intruder.notifies(timeout=5, stop_after=1)):
            channel = leaked_reply_channel(request.payload)
            notify(intruder, json.dumps(forged_row), channel)
            notify(intruder, "not json", channel)
            wrong_key = Signer(key="guess", salt="selecto_pool.control.reply")
            notify(intruder, wrong_key.sign_object(forged_row), channel)

    attacker = threading.Thread(target=answer_first)
    attacker.start()
    try:
        report = poolstats(ALIAS, "--timeout", "1.5")
    finally:
        attacker.join()
    rows = {row["pid"]: row for row in report["processes"]}
    assert 31337 not in rows
    assert rows[os.getpid()]["in_use"] != 9999
    assert rows[silent_responder]["status"] == "no answer"
    assert report["rejected_replies"] == 3


def test_another_role_cannot_pose_as_a_silent_process(
    intruder_info: dict[str, Any], answering: dict[str, Any]
) -> None:
    info = {**intruder_info, "application_name": "selecto_pool:ctl:4343:tiny"}
    with psycopg.connect(**info, autocommit=True) as impostor:
        impostor.execute("LISTEN selecto_pool_control")
        started = time.monotonic()
        report = poolstats(ALIAS, "--timeout", "2")
        elapsed = time.monotonic() - started
    assert 4343 not in {row["pid"] for row in report["processes"]}
    assert elapsed < 1.5, "waited for a process that isn't one"


@contextlib.contextmanager
def alias_of_its_own(name: str, caplog: pytest.LogCaptureFixture) -> Iterator[str]:
    """``name``: a one-connection alias whose responder, its own and so never
    warned yet, answers; the control channel's warnings are captured from
    before it starts."""
    options = {"pool": {"pool_size": 1, "max_overflow": 0}}
    with (
        extra_alias(name, OPTIONS=options) as alias,
        caplog.at_level(logging.WARNING, logger="selecto_pool.control"),
    ):
        wait_until_answering(alias)
        yield alias


def intruder_connection(
    intruder_info: dict[str, Any], alias: str
) -> psycopg.Connection[Any]:
    """The intruding role's connection to the database of ``alias``."""
    info = {**intruder_info, "dbname": conninfo_of(alias)["dbname"]}
    return psycopg.connect(**info, autocommit=True)


def test_unverified_messages_are_logged_once_a_minute(
    intruder_info: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    from selecto_pool._process import control

    with alias_of_its_own("watched", caplog) as alias:
        with intruder_connection(intruder_info, alias) as conn:
            for number in range(5):
                notify(conn, f"garbage {number}")
        deadline = time.monotonic() + 3
        while control.counters()[alias]["rejected"] < 5:
            assert time.monotonic() < deadline, "the messages were not seen"
            time.sleep(0.05)
    dropped = [
        r.getMessage()
        for r in caplog.records
        if "'watched'" in r.getMessage() and "dropped a message" in r.getMessage()
    ]
    assert len(dropped) == 1, dropped
    assert "garbage" not in dropped[0]  # the sender's text stays out of logs


def test_a_flood_is_sat_out_and_the_process_answers_after_it(
    intruder_info: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    from selecto_pool._process import control

    with alias_of_its_own("flooded", caplog) as alias:
        with intruder_connection(intruder_info, alias) as conn:
            conn.execute(
                "SELECT pg_notify('selecto_pool_control', 'flood ' || g) "
                "FROM generate_series(1, 20000) g"
            )
        answer = wait_until_answering(alias, timeout=5)
        dropped = control.counters()[alias]["rejected"]
    assert answer["status"] == "ok"
    assert any("flooded with over" in r.getMessage() for r in caplog.records)
    # Looked at or dropped unread (the rest never reached the responder).
    assert dropped > 0


@pytest.mark.slow
def test_a_flood_of_large_messages_is_dropped_unread(
    intruder_info: dict[str, Any],
) -> None:
    """160 MB of NOTIFYs queued in one transaction: the process reads about
    a second's worth (8 MB), not all of them (psycopg would hold them all if
    the responder asked the server anything before reading them)."""
    import psutil

    process = psutil.Process()
    peak = [process.memory_info().rss]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.005)

    options = {"pool": {"pool_size": 1, "max_overflow": 0}}
    with extra_alias("flooded_large", OPTIONS=options) as alias:
        wait_until_answering(alias)
        before = process.memory_info().rss
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        info = {**intruder_info, "dbname": conninfo_of(alias)["dbname"]}
        with psycopg.connect(**info, autocommit=True) as conn:
            conn.execute(  # distinct payloads: PostgreSQL folds equal ones
                "SELECT pg_notify('selecto_pool_control', repeat('x', 7980) || g) "
                "FROM generate_series(1, 20000) g"
            )
        answer = wait_until_answering(alias, timeout=10)
        sampling.set()
        sampler.join()
    assert answer["status"] == "ok"
    assert peak[0] - before < 64 * 2**20, f"{(peak[0] - before) >> 20} MiB"


def test_a_responder_whose_connection_is_killed_comes_back(
    answering: dict[str, Any], observer: Observer
) -> None:
    before = counters()["restarts"]
    observer.conn.execute(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
        "WHERE application_name = %s",
        [f"selecto_pool:ctl:{os.getpid()}:{ALIAS}"],
    )
    assert wait_until_answering(ALIAS, timeout=5)["status"] == "ok"
    assert counters()["restarts"] == before + 1


def test_a_request_that_fails_is_counted_and_the_next_one_answered(
    answering: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = get_pool(ALIAS)
    calls = []
    real_stats = pool.stats

    def failing_once() -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected")
        return real_stats()

    monkeypatch.setattr(pool, "stats", failing_once)
    first = poolstats(ALIAS, "--timeout", "1")
    rows = {row["pid"]: row for row in first["processes"]}
    assert rows[os.getpid()]["status"] == "no answer"
    assert wait_until_answering(ALIAS, timeout=3)["status"] == "ok"
    assert counters()["errors"] >= 1


def test_signed_clears_are_rate_limited(answering: dict[str, Any]) -> None:
    from selecto_pool._process import control, control_client

    params = connections[ALIAS].get_connection_params()
    before = counters()
    started = time.monotonic()
    for _ in range(20):
        control_client.broadcast(params, "clear")
    sending = time.monotonic() - started
    time.sleep(control.CLEAR_INTERVAL + 0.5)
    after = counters()
    assert after["requests"] - before["requests"] == 20
    # One at once, then one per interval for those that came meanwhile.
    assert after["clears"] - before["clears"] <= 2 + sending // control.CLEAR_INTERVAL


def test_a_request_signed_with_a_previous_key_is_answered_with_it() -> None:
    """SECRET_KEY rotation: SECRET_KEY_FALLBACKS are honoured, as by Django."""
    from selecto_pool._process import control_messages as messages

    with override_settings(SECRET_KEY="old-key"):
        request = messages.new_request("stats", ALIAS, wants_reply=True)
        payload = messages.sign_request(request)
    with override_settings(SECRET_KEY="new-key", SECRET_KEY_FALLBACKS=["old-key"]):
        received = messages.open_request(payload, time.time())
        reply = messages.sign_reply(
            received,
            {"host": "h", "pid": 1, "alias": ALIAS, "backend": 7, "cleared": 0},
        )
    assert received.reply_channel == request.reply_channel
    with override_settings(SECRET_KEY="old-key"):
        clear = messages.Request(
            "clear", ALIAS, request.nonce, request.sent_at, True, "old-key"
        )
        assert messages.open_reply(reply, clear, sender=7)["cleared"] == 0
