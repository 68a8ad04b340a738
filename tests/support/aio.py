"""asyncio helpers: an async pool for the length of a block, event-loop lag."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import selecto_pool as sp


@contextlib.asynccontextmanager
async def async_pool(config: Any, **options: Any) -> AsyncIterator[sp.AsyncSelectoPool]:
    """``astart_pool(config, **options)``, stopped at the end of the block."""
    pool = await sp.astart_pool(config, **options)
    try:
        yield pool
    finally:
        await sp.astop_pool(pool, timeout=1)


class LoopThread:
    """An event loop running in a thread of its own; ``run()`` a coroutine
    there from the test's thread and get its result."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


@contextlib.contextmanager
def loop_thread() -> Iterator[LoopThread]:
    """A ``LoopThread`` for the length of the block (stopped and closed after)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield LoopThread(loop)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    """Wait in the loop until ``condition()`` holds; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class LagMeter:
    """A ticker coroutine: how late the event loop runs a task that is due.

    Each tick sleeps ``interval`` and records how much later than that it
    woke up (``lags``). A call that blocks the loop for 50 ms shows as a lag
    of 50 ms; a loop that only switches between tasks stays within a few ms.
    Two stalls have nothing to do with the code under test, and
    ``own_lags`` subtract them: on a loaded machine the kernel keeps the
    runnable loop thread waiting for a CPU, tens of ms at times (Linux's
    per-thread run-queue time, ``/proc/.../schedstat``; 60 ms measured with
    a bare ``asyncio.sleep()`` loop at load 7 on 2 cores), and Python's
    full garbage collections of the test process's heap (pytest, Django,
    every test's objects: 85 ms measured). What is left is the lag the code
    caused, blocked in a system call or running. Without schedstat, only
    the collections are subtracted.
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.lags: list[float] = []
        self.own_lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LagMeter:
        self._collecting = 0.0  # seconds spent in garbage collections
        self._collection_started = 0.0
        gc.callbacks.append(self._on_collection)
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)  # the first tick starts now
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        gc.callbacks.remove(self._on_collection)

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._collection_started = time.monotonic()
        else:
            self._collecting += time.monotonic() - self._collection_started

    @property
    def worst(self) -> float:
        return max(self.lags, default=0.0)

    @property
    def worst_own(self) -> float:
        return max(self.own_lags, default=0.0)

    async def _tick(self) -> None:
        path = f"/proc/self/task/{threading.get_native_id()}/schedstat"
        while True:
            before, queued_before = time.monotonic(), _run_queue_wait(path)
            collected_before = self._collecting
            await asyncio.sleep(self.interval)
            lag = time.monotonic() - before - self.interval
            queued = _run_queue_wait(path) - queued_before
            collecting = self._collecting - collected_before
            self.lags.append(lag)
            self.own_lags.append(max(lag - queued - collecting, 0.0))


def _run_queue_wait(path: str) -> float:
    """Seconds this thread has waited for a CPU while runnable (0.0 if unknown)."""
    try:
        with open(path) as stats:
            return int(stats.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0
