"""A Celery app needing no service, for ``tests/test_celery.py``.

kombu's ``filesystem://`` broker and Celery's ``file://`` result backend keep
messages and results in one directory (``SELECTO_CELERY_DIR`` for the worker).
The test sends tasks by name through ``configured()``; the worker runs
``celery -A tests.support.celery_app worker`` with ``DJANGO_SETTINGS_MODULE``
set, so that Celery installs its Django fixup as in a project.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery

PROBE = "tests.support.celery_app.probe"
CLOSE_POOL = "tests.support.celery_app.close_pool_in_task"
# The worker's pool (tests.support.celery_settings), and how the server sees it.
APPLICATION_NAME = "selecto-celery"
POOL_SIZE = 2


def configured(directory: Path, django_fixup: bool = False) -> Celery:
    """An app whose broker and results live in ``directory``.

    The test's own app only sends tasks: it leaves Celery's Django fixup out.
    """
    queue, results = directory / "queue", directory / "results"
    for folder in (queue, results):
        folder.mkdir(parents=True, exist_ok=True)
    app = Celery("selecto_celery_test", fixups=None if django_fixup else [])
    app.conf.update(
        broker_url="filesystem://",
        broker_transport_options={
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
            "control_folder": str(directory / "control"),
            "polling_interval": 0.05,
        },
        result_backend=f"file://{results}",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_serializer="json",
        result_serializer="json",
    )
    return app


def _worker_app() -> Celery:
    app = configured(Path(os.environ["SELECTO_CELERY_DIR"]), django_fixup=True)

    @app.task(name=PROBE)
    def probe() -> dict[str, Any]:
        """An ORM query; which process and server session served it."""
        from django.db import connection

        from testproject.library.models import Author

        Author.objects.count()
        return {"pid": os.getpid(), "backend": connection.connection.info.backend_pid}

    @app.task(name=CLOSE_POOL)
    def close_pool_in_task() -> dict[str, Any]:
        """A task that means ``close_pool()``: is the pool really gone after?

        It first runs a task inline (``apply()``), whose end is not the end
        of this one.
        """
        from django.db import connection

        from selecto_pool import get_pool

        assert probe.apply().successful()
        before = get_pool("default")
        connection.close()
        connection.close_pool()
        return {"pid": os.getpid(), "closed": before.closed}

    return app


if os.environ.get("SELECTO_CELERY_DIR"):
    # Only in the worker (``celery -A``), which finds the app by this name.
    app = _worker_app()
