"""fork() after the pool opened: the child gets its own pool and connections."""

from __future__ import annotations

import json
import os
import traceback

import pytest
from django.db import connections

from selecto_pool import get_pool
from testproject.library.models import Author

from .support.database import Observer


def in_child(write_fd: int, parent_pool_id: int) -> None:
    """Runs in the forked child; reports through the pipe, never returns."""
    status = 1
    try:
        pool = get_pool("default")
        report = {
            "same_pool": id(pool) == parent_pool_id,
            "count": Author.objects.count(),
            "backend": connections["default"].connection.info.backend_pid,
        }
        connections["default"].close()
        os.write(write_fd, json.dumps(report).encode())
        status = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(status)


@pytest.mark.django_db(transaction=True)
def test_forked_child_uses_its_own_connections(observer: Observer) -> None:
    Author.objects.create(name="parent")
    # The parent keeps a connection checked out across the fork, as a
    # preloading server or a test runner mid-request would.
    parent_backend = connections["default"].connection.info.backend_pid
    parent_pool = get_pool("default")
    parent_backends = set(observer.connections_of("selecto-default"))

    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        in_child(write_fd, id(parent_pool))
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        output = pipe.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child failed (see stderr)"
    report = json.loads(output)

    assert report["same_pool"] is False
    assert report["count"] == 1
    assert report["backend"] not in parent_backends
    # The parent's connections were neither used nor closed by the child.
    assert parent_backends <= set(observer.connections_of("selecto-default"))
    assert connections["default"].connection.info.backend_pid == parent_backend
    assert Author.objects.count() == 1
    assert get_pool("default") is parent_pool
