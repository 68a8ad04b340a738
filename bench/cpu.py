"""CPU time from ``/proc``: the client's, the server's and everybody else's.

Client and server share two cores here, so requests/s alone can't tell a
pool that saves server work (prepared plans) from one that saves Python, nor
a fast configuration from one that ran while another job was busy. Linux
only; without ``/proc`` (or with a remote server) the figures are ``None``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psycopg

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold
    spaces): state is [0], ppid [1], utime [11], stime [12], cutime [13]..."""
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
    if fields is None or not Path(f"/proc/{fields[1]}/stat").exists():
        return None
    comm = Path(f"/proc/{fields[1]}/comm").read_text().strip()
    return int(fields[1]) if comm.startswith("postgres") else None


def server_seconds(postmaster: int) -> float | None:
    """CPU used by the server so far: the postmaster, its live children, and
    (through the postmaster's cutime/cstime) every child it has reaped."""
    own = _stat(postmaster)
    if own is None:
        return None
    ticks = sum(int(value) for value in own[11:15])
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[1] == str(postmaster):
                ticks += int(fields[11]) + int(fields[12])
    return ticks / _TICK


def machine_seconds() -> float | None:
    """CPU used by everything on the machine so far (all cores)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    values = [int(value) for value in fields[:8]]
    # user nice system idle iowait irq softirq steal: busy = all but idle+iowait
    return (sum(values) - values[3] - values[4]) / _TICK


@dataclass(frozen=True)
class Sample:
    client: float
    server: float | None
    machine: float | None


def sample(postmaster: int | None, client: float) -> Sample:
    server = server_seconds(postmaster) if postmaster is not None else None
    return Sample(client, server, machine_seconds())
