"""Settings of the demo project, from the environment (DATABASE_URL above all).

``python3 dev.py demo`` sets DATABASE_URL to a throwaway local PostgreSQL.
Without DATABASE_URL, a ``manage.py`` command in another shell uses the
database of the demo running from this repository, if one is (see
``runstate``). The URL carries a password, so it is never printed, not even in
errors.
"""

from __future__ import annotations

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from testproject import runstate

env = environ.Env()

SECRET_KEY = env("SECRET_KEY", default="django-insecure-selecto-pool-demo-only")
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "selecto_pool",
    "testproject.library",
]

ROOT_URLCONF = "testproject.urls"
WSGI_APPLICATION = "testproject.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
    },
]


def _database_url() -> str:
    if url := env.str("DATABASE_URL", default=""):
        return url
    # Read only now: `python3 dev.py demo` running in another shell.
    demo_data = runstate.demo_data_dir(Path(__file__).resolve().parents[1])
    if url := runstate.running_database_url(demo_data):
        return url
    raise ImproperlyConfigured(
        "DATABASE_URL is not set and no demo is running: start one with "
        "`python3 dev.py demo` (manage.py commands in another shell then use "
        "its database), or set DATABASE_URL to a PostgreSQL database of your own."
    )


DATABASES = {"default": environ.Env.db_url_config(_database_url())}
# Comparing with Django's own backend (django.db.backends.postgresql) is one
# variable away. A mysql:// URL gets the MySQL ENGINE.
_mysql = DATABASES["default"]["ENGINE"] == "django.db.backends.mysql"
DATABASES["default"]["ENGINE"] = env(
    "SELECTO_DEMO_ENGINE",
    default="selecto_pool.backend.mysql" if _mysql else "selecto_pool.backend",
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# runserver copies os.environ, DATABASE_URL included, into request.META, and
# Django's debug page only hides names that look secret.
DEFAULT_EXCEPTION_REPORTER_FILTER = "testproject.debug.ExceptionReporterFilter"

USE_TZ = True
TIME_ZONE = "UTC"
