"""Running the demo project (``testproject``) in processes of its own, and a
function in a forked child of the test's."""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def report_from_fork(child: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """What ``child()`` returns when run in a forked child of this process.

    The child sends it as JSON through a pipe and ends with ``os._exit()``,
    never returning into pytest; if it raises, its traceback goes to stderr
    and the calling test fails.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.write(write_fd, json.dumps(child()).encode())
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        output = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child failed (see stderr)"
    report: dict[str, Any] = json.loads(output)
    return report
