"""Django settings of the Celery worker of ``tests/test_celery.py``.

The README's configuration (``OPTIONS["pool"]``, the form Celery's Django fixup
reacts to) on the test database, whose URL the test passes in
``DATABASE_URL``. Not ``tests.settings``: that module starts servers of its
own when imported.
"""

from __future__ import annotations

import os

import environ

from tests.support.celery_app import APPLICATION_NAME, POOL_SIZE

DATABASES = {
    "default": {
        **environ.Env.db_url_config(os.environ["DATABASE_URL"]),
        "ENGINE": "selecto_pool.backend",
        "OPTIONS": {
            "application_name": APPLICATION_NAME,
            "pool": {"pool_size": POOL_SIZE, "max_overflow": 0},
        },
    }
}
SECRET_KEY = "tests-only"
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "selecto_pool",
    "testproject.library",
]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
