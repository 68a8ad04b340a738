"""Keeping a Celery prefork worker's pools from one task to the next.

Celery's Django fixup calls ``close()`` and then ``close_pool()`` on every
connection when a prefork child starts and before and after each of its tasks,
whenever ``OPTIONS["pool"]`` is set: Django's own pool would otherwise be
shared by children forked from one parent. selecto_pool's pools already belong
to one process (see ``registry``), so there that call only costs a new pool per
task: ``pool_size`` new sessions, an empty statement cache. These receivers of
Celery's public signals mark the moments when the fixup does this, so that
``DatabaseWrapper.close_pool()`` keeps the pool then and closes it at any
other time (in a task, in a web process, in Django's test runner).

Celery calls a signal's receivers in the order they were connected.
``connect()`` runs in ``AppConfig.ready()``, which the fixup triggers
(``django.setup()``) before it connects its own receivers at ``worker_init``:
the marks set on ``worker_process_init`` and ``task_postrun`` come first. The
receiver that ends a mark, on ``task_prerun``, is connected in the child, so
after the fixup's. In any other order the worst case is Celery's behaviour
without this module: a new pool per task.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

logger = logging.getLogger("selecto_pool.pool")

_signals: Any = None
_in_prefork_child = False
# The thread in which Celery is between two tasks of this prefork child, if any.
_between_tasks: int | None = None


def connect(signals: Any) -> None:
    """Receive ``signals`` (the ``celery.signals`` module) from now on."""
    global _signals
    _signals = signals
    signals.worker_process_init.connect(
        _child_started, weak=False, dispatch_uid="selecto_pool.child_started"
    )
    signals.task_postrun.connect(
        _task_ended, weak=False, dispatch_uid="selecto_pool.task_ended"
    )


def keeps_pool(alias: str) -> bool:
    """Whether ``close_pool()`` on ``alias`` now is Celery's, to be ignored."""
    if _between_tasks is None or _between_tasks != threading.get_ident():
        return False
    logger.debug("pool %r kept: close_pool() between two Celery tasks", alias)
    return True


def _child_started(**kwargs: Any) -> None:
    global _in_prefork_child, _between_tasks
    _in_prefork_child = True
    _between_tasks = threading.get_ident()
    # Connected here, in the child, so that it runs after the fixup's own.
    _signals.task_prerun.connect(
        _task_started, weak=False, dispatch_uid="selecto_pool.task_started"
    )


def _task_started(sender: Any = None, **kwargs: Any) -> None:
    global _between_tasks
    if not _is_eager(sender):
        _between_tasks = None


def _task_ended(sender: Any = None, **kwargs: Any) -> None:
    global _between_tasks
    if _in_prefork_child and not _is_eager(sender):
        _between_tasks = threading.get_ident()


def _is_eager(task: Any) -> bool:
    """A task run inline (``apply()``) by another: not a boundary for Celery."""
    return bool(getattr(getattr(task, "request", None), "is_eager", False))
