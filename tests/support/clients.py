"""Client threads, as a web server's requests are, and bounded waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connections

import selecto_pool as sp
from selecto_pool import CheckoutTimeout


def run_threads(count: int, target: Callable[[int], Any]) -> list[Any]:
    """Run ``target(i)`` in ``count`` threads at once; re-raise the first error.

    Each thread closes its Django connections at the end, as a request does.
    """
    results: list[Any] = [None] * count
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def body(index: int) -> None:
        try:
            start.wait()
            results[index] = target(index)
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return results


@dataclass
class Outcome:
    """One call of a client: when it started and ended (monotonic), how it went."""

    started: float
    ended: float
    ok: bool
    error: str = ""


def run_clients(
    count: int, op: Callable[[int, int], None], stop: threading.Event
) -> tuple[list[list[Outcome]], list[threading.Thread]]:
    """Start ``count`` threads calling ``op(client, n)`` until ``stop`` is set.

    Every call is recorded; a failed one is followed by a 10 ms pause, as a
    client retrying would.
    """
    outcomes: list[list[Outcome]] = [[] for _ in range(count)]

    def loop(client: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            started = time.monotonic()
            try:
                op(client, n)
            except Exception as exc:
                outcomes[client].append(
                    Outcome(started, time.monotonic(), False, describe(exc))
                )
                time.sleep(0.01)
            else:
                outcomes[client].append(Outcome(started, time.monotonic(), True))

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    return outcomes, threads


def join_all(threads: list[threading.Thread], timeout: float) -> None:
    """Join ``threads`` within ``timeout`` seconds in all; fail if one hangs."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    stuck = [thread.name for thread in threads if thread.is_alive()]
    assert not stuck, f"{len(stuck)} client thread(s) hang"


def describe(exc: BaseException) -> str:
    """``"ErrorClass: first line of the message"``."""
    return (
        f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    )


def wait_for(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``condition()`` held; fails the test after ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "condition not met in time"
        time.sleep(0.005)
    return time.monotonic() - started


def timed_out_checkout(pool: Any) -> tuple[float, str]:
    """A checkout of ``pool`` that must raise ``CheckoutTimeout``: the seconds
    it waited, and the error's message."""
    started = time.monotonic()
    with pytest.raises(CheckoutTimeout) as info:
        sp.checkout(pool)
    return time.monotonic() - started, str(info.value)
