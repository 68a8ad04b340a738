"""What the parent process watches while a worker runs.

Server connections (peak count in ``pg_stat_activity``, by the run's
``application_name``) and CPU time from ``/proc``: the client's, the
server's and everybody else's. Client and server share two cores here, so
requests/s alone can't tell a pool that saves server work (prepared plans)
from one that saves Python, nor a fast configuration from one that ran while
another job was busy.

The parent does this, not the worker: there a sampling thread would compete
with the measured threads for the GIL, and be late by seconds with 32 of
them. CPU counters are interpolated at the worker's measured window. Linux
only; without ``/proc``, or with a server on another machine, the CPU figures
are ``None``.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: Seconds between two looks at pg_stat_activity.
INTERVAL = 0.02
#: CPU counters are read every this many looks (each read costs ~0.3 ms).
CPU_EVERY = 5


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold
    spaces): ppid is [1], utime [11], stime [12], cutime [13], cstime [14]."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def postmaster_of(url: str) -> int | None:
    """The pid of the server's postmaster, if it runs on this machine."""
    try:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            # Read while the backend exists: it exits when the connection closes.
            fields = _stat(int(row[0])) if row else None
    except psycopg.Error:
        return None
    # Over TCP to another machine the pid means nothing here (or something else).
    if fields is None or not Path(f"/proc/{fields[1]}/comm").exists():
        return None
    comm = Path(f"/proc/{fields[1]}/comm").read_text().strip()
    return int(fields[1]) if comm.startswith("postgres") else None


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN
        return [
            entry.name
            for entry in os.scandir("/proc")
            if entry.name.isdigit() and (_stat(entry.name) or ["", ""])[1] == str(pid)
        ]


def process_seconds(pid: int, children: bool = False) -> float | None:
    """CPU used by a process so far (and by the children it has reaped)."""
    fields = _stat(pid)
    if fields is None:
        return None
    return sum(int(value) for value in fields[11 : 15 if children else 13]) / _TICK


def server_seconds(postmaster: int) -> float | None:
    """CPU used by the server so far: the postmaster, every child it reaped
    (its cutime/cstime) and its live children."""
    total = process_seconds(postmaster, children=True)
    if total is None:
        return None
    for child in _children(postmaster):
        total += process_seconds(int(child)) or 0.0
    return total


def machine_seconds() -> float | None:
    """CPU used by everything on the machine so far (all cores)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    values = [int(value) for value in fields[:8]]
    # user nice system idle iowait irq softirq steal: busy = all but idle+iowait
    return (sum(values) - values[3] - values[4]) / _TICK


@dataclass
class Trace:
    """Counters of one run over time: (monotonic ns, client, server, machine)."""

    worker: int
    postmaster: int | None
    samples: list[tuple[int, float | None, float | None, float | None]] = field(
        default_factory=list
    )

    def sample(self) -> None:
        server = server_seconds(self.postmaster) if self.postmaster else None
        client = process_seconds(self.worker)
        self.samples.append((time.monotonic_ns(), client, server, machine_seconds()))

    def _at(self, when: int, column: int) -> float | None:
        """``column`` interpolated at ``when`` (None outside the samples)."""
        times = [sample[0] for sample in self.samples]
        i = bisect.bisect_left(times, when)
        if i == 0 or i == len(times):
            return None
        (t0, *v0), (t1, *v1) = self.samples[i - 1], self.samples[i]
        a, b = v0[column], v1[column]
        if a is None or b is None:
            return None
        return a + (b - a) * (when - t0) / (t1 - t0)

    def figures(self, start: int, end: int, requests: int) -> dict[str, float | None]:
        """CPU per request of the worker and of the server over [start, end],
        and the share of the cores other processes used meanwhile."""
        deltas: list[float | None] = []
        for column in range(3):
            before, after = self._at(start, column), self._at(end, column)
            ok = before is not None and after is not None
            deltas.append(after - before if ok else None)  # type: ignore[operator]
        client, server, machine = deltas
        other = None
        if None not in deltas:
            spare = machine - client - server  # type: ignore[operator]
            other = max(spare, 0.0) / ((end - start) / 1e9 * (os.cpu_count() or 1))
        return {
            "cpu_us": client / requests * 1e6
            if client is not None and requests
            else None,
            "server_cpu_us": (
                server / requests * 1e6 if server is not None and requests else None
            ),
            "other_cpu": other,
        }


class RunSampler:
    """Samples one run, from ``with`` entry to exit, in a thread."""

    def __init__(
        self, url: str, application_names: list[str], trace: Trace | None = None
    ):
        self._conn = self._connect(url)
        self._names = application_names
        self.trace = trace
        self._stop = threading.Event()
        #: Most connections seen at once; short-lived ones (no pooling) can
        #: fall between two looks, so for them this is a lower bound.
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _connect(self, url: str) -> Any:
        return psycopg.connect(
            url, autocommit=True, application_name="selecto_bench:sampler"
        )

    def __enter__(self) -> RunSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()

    def _count(self) -> int:
        """The run's server connections now."""
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY(%s)"
        row = self._conn.execute(query, [self._names]).fetchone()
        return int(row[0]) if row else 0

    def _run(self) -> None:
        looks = 0
        while True:
            if self.trace is not None and looks % CPU_EVERY == 0:
                self.trace.sample()
            if self._stop.wait(INTERVAL):
                if self.trace is not None:
                    self.trace.sample()
                return
            try:
                count = self._count()
            except Exception:
                return  # the run's result says what went wrong
            self.peak = max(self.peak, count)
            looks += 1


class MySQLRunSampler(RunSampler):
    """The same on MariaDB: a run's connections are those on its database
    (the sampler's own uses none)."""

    def __init__(self, url: str, database: str, trace: Trace | None = None):
        self._database = database
        super().__init__(url, [], trace)

    def _connect(self, url: str) -> Any:
        from .server import mysql_connect

        return mysql_connect(url)

    def _count(self) -> int:
        cursor = self._conn.cursor()
        try:
            cursor.execute(
                "SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = %s",
                [self._database],
            )
            return int(cursor.fetchone()[0])
        finally:
            cursor.close()
