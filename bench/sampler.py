"""What the parent process watches while a worker runs.

Server connections (peak count in ``pg_stat_activity``, by the run's
``application_name``) and CPU counters (``bench.cpu``). The parent does
this, not the worker: there a sampling thread would compete with the
measured threads for the GIL, and be late by seconds with 32 of them.
"""

from __future__ import annotations

import threading

import psycopg

from .cpu import Trace

#: Seconds between two looks at pg_stat_activity.
INTERVAL = 0.02
#: CPU counters are read every this many looks (each read costs ~0.3 ms).
CPU_EVERY = 5


class RunSampler:
    """Samples one run, from ``with`` entry to exit, in a thread."""

    def __init__(
        self, url: str, application_names: list[str], trace: Trace | None = None
    ):
        self._conn = psycopg.connect(
            url, autocommit=True, application_name="selecto_bench:sampler"
        )
        self._names = application_names
        self.trace = trace
        self._stop = threading.Event()
        #: Most connections seen at once; short-lived ones (no pooling) can
        #: fall between two looks, so for them this is a lower bound.
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RunSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY(%s)"
        looks = 0
        while True:
            if self.trace is not None and looks % CPU_EVERY == 0:
                self.trace.sample()
            if self._stop.wait(INTERVAL):
                if self.trace is not None:
                    self.trace.sample()
                return
            try:
                row = self._conn.execute(query, [self._names]).fetchone()
            except psycopg.Error:
                return  # the run's result says what went wrong
            self.peak = max(self.peak, int(row[0]) if row else 0)
            looks += 1
