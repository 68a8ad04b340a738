"""Settings of the test suite: the demo project's apps, several pool setups.

Every alias points at the same database (so Django creates one test database)
with different pool options; ``application_name`` lets the server count each
alias's connections.
"""

from __future__ import annotations

import environ

from tests.support.postgres import database_url, spare_server

_base = environ.Env.db_url_config(database_url())
_base["ENGINE"] = "selecto_pool.backend"
_base["TEST"] = {"NAME": "test_selecto"}


def _alias(application_name: str, pool: object) -> dict[str, object]:
    return {
        **_base,
        "OPTIONS": {"application_name": application_name, "pool": pool},
    }


DATABASES = {
    "default": _alias("selecto-default", {"pool_size": 4, "max_overflow": 4}),
    "small": _alias("selecto-small", {"pool_size": 5, "max_overflow": 0}),
    "tiny": _alias(
        "selecto-tiny", {"pool_size": 2, "max_overflow": 0, "checkout_timeout": 0.5}
    ),
    "unpooled": _alias("selecto-unpooled", False),
    "cached": _alias(
        "selecto-cached",
        {
            "pool_size": 1,
            "max_overflow": 0,
            "prepared_statement_cache_size": 3,
            "prepare_threshold": 2,
        },
    ),
    # One connection, which tests check out to saturate the pool; a checkout
    # waits up to 3 s (as django-health-check's stock check does then).
    "single": _alias(
        "selecto-single",
        {"pool_size": 1, "max_overflow": 0, "checkout_timeout": 3, "control": False},
    ),
    # selecto_pool.backend.prometheus, and django-prometheus's own backend
    # (whose counts it must match), on the default alias's test database.
    "prometheus": {
        **_alias(
            "selecto-prometheus",
            {"pool_size": 1, "max_overflow": 0, "prepare_threshold": 2},
        ),
        "ENGINE": "selecto_pool.backend.prometheus",
        "TEST": {"MIRROR": "default"},
    },
    "stock_prometheus": {
        **_alias("stock-prometheus", False),
        "ENGINE": "django_prometheus.db.backends.postgresql",
        "OPTIONS": {"application_name": "stock-prometheus"},
        "TEST": {"MIRROR": "default"},
    },
    # Its own server, which tests stop and start; never a test database.
    "spare": {
        **environ.Env.db_url_config(spare_server().url),
        "ENGINE": "selecto_pool.backend",
        "OPTIONS": {"pool": {"pool_size": 1, "max_overflow": 0}},
    },
}

SECRET_KEY = "tests-only"
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "selecto_pool",
    "testproject.library",
    # The packages selecto_pool.contrib.health_check and
    # selecto_pool.backend.prometheus are tested with (their URLs are in
    # tests.support.ecosystem_urls).
    "health_check",
    "django_prometheus",
]
ROOT_URLCONF = "testproject.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
