"""Running the demo project (``testproject``) in processes of its own."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository: the working directory of ``manage.py`` and ``python -m``.
ROOT = Path(__file__).resolve().parents[2]


def demo_environment(database_url: str) -> dict[str, str]:
    """The environment of a demo process using ``database_url``.

    The health view shows its details to nobody (no token); the process
    shares the suite's ``SECRET_KEY``, as poolstats trusts only replies
    signed with the project's key.
    """
    from django.conf import settings

    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "SELECTO_POOL_HEALTH_TOKEN": "",
        "SECRET_KEY": settings.SECRET_KEY,
    }


def children_of(pid: int) -> set[int]:
    """The pids of ``pid``'s child processes (Linux: from ``/proc``)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            children.add(int(stat.parent.name))
    return children
