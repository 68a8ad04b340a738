"""Run Django's own test suite with the stock backend and with selecto_pool.

    python3 dev.py django-suite [LABEL ...] [--parallel N] [--config NAME ...]
                                [--options JSON] [--mysql]

Downloads the source distribution of the installed Django (it holds
``tests/runtests.py``) into ``.cache/``, starts a throwaway PostgreSQL (or uses
``DATABASE_URL``; postgres_tests need ICU collations, which the embedded
wheel's build lacks: ``SELECTO_PG_BIN=/usr/lib/postgresql/15/bin`` uses
Debian's), runs the labels once with ``django.db.backends.postgresql``
and once per configuration with ``selecto_pool.backend``, and lists, for each
configuration, every test that fails only with selecto_pool. Exits 1 if there
is one.

The configurations (``--config``, repeatable; default: ``defaults`` and
``pool-dict``) are the ``OPTIONS`` of both aliases: ``defaults`` has none at
all (the pool and the statement cache at their defaults, as most projects
will run it), ``pool-dict`` a small ``OPTIONS["pool"]``, ``prepare-at-once``
prepares every statement at its first run (``prepare_threshold: 0``), and
``--options '{"pool": {...}}'`` adds one of your own.

``--mysql`` does the same on a throwaway MariaDB (Debian's mariadb-server,
``testproject.mariaserver``) with ``django.db.backends.mysql`` and
``selecto_pool.backend.mysql``, for the labels of ``MYSQL_LABELS`` by default
(about ten minutes for both runs on an idle 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import django

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
LABELS = [
    *("backends", "transactions", "queries", "basic", "expressions", "aggregation"),
    *("model_fields", "schema", "migrations", "raw_query", "bulk_create", "update"),
    *("delete", "select_for_update", "introspection", "postgres_tests"),
]
ENGINES = {
    "stock": "django.db.backends.postgresql",
    "selecto": "selecto_pool.backend",
}
# What a pool could change: connections, transactions, errors, the SQL the
# ORM sends and the values it gets back, locking.
MYSQL_LABELS = [
    *("backends", "transactions", "transaction_hooks", "basic", "queries"),
    *("expressions", "aggregation", "annotations", "db_functions", "lookup"),
    *("model_fields", "select_for_update", "bulk_create", "update", "delete"),
    *("raw_query", "get_or_create", "force_insert_update", "select_related"),
    *("prefetch_related", "many_to_one", "one_to_one", "model_inheritance"),
    *("timezones", "fixtures", "serializers", "test_utils", "schema"),
    *("migrations", "introspection", "inspectdb", "indexes", "constraints"),
    *("defer", "ordering", "dates", "datetimes", "null_queries"),
]
MYSQL_ENGINES = {
    "stock": "django.db.backends.mysql",
    "selecto": "selecto_pool.backend.mysql",
}
# Prepared statements don't exist for MySQL (docs/mysql.md).
POSTGRESQL_ONLY_CONFIGS = {"prepare-at-once"}
#: OPTIONS of both aliases, by configuration name.
CONFIGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "pool-dict": {"pool": {"pool_size": 2, "max_overflow": 8}},
    "prepare-at-once": {"pool": {"prepare_threshold": 0}},
}
SETTINGS = """\
import environ, json, os
_db = environ.Env.db_url_config(os.environ["DATABASE_URL"])
_engine = os.environ["DJANGO_SUITE_ENGINE"]
_options = json.loads(os.environ["DJANGO_SUITE_OPTIONS"])
DATABASES = {
    alias: {**_db, "ENGINE": _engine, "NAME": f"django_{alias}", "OPTIONS": _options}
    for alias in ("default", "other")
}
SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
"""
_OUTCOME = re.compile(r"^(FAIL|ERROR): (\S+) \(([\w.]+)\)", re.MULTILINE)


def django_tests() -> Path:
    """The ``tests/`` directory of the installed Django's source release."""
    version = django.get_version()
    source = CACHE / f"django-{version}"
    if not (source / "tests" / "runtests.py").exists():
        CACHE.mkdir(exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"django=={version}",
                "-d",
                str(CACHE),
            ],
            check=True,
        )
        [archive] = CACHE.glob(f"[Dd]jango-{version}.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(CACHE, filter="data")
    (CACHE / "suite_settings.py").write_text(SETTINGS)
    try:
        import tblib  # noqa: F401 - the parallel runner pickles tracebacks with it
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "tblib"], check=True)
    return source / "tests"


def run(
    engine: str,
    options: dict[str, Any],
    name: str,
    labels: list[str],
    parallel: int,
    url: str,
) -> set[str]:
    """The ids of the failing tests (FAIL and ERROR) with ``engine``."""
    tests = django_tests()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SUITE_ENGINE": engine,
        "DJANGO_SUITE_OPTIONS": json.dumps(options),
        "PYTHONPATH": os.pathsep.join([str(CACHE), str(ROOT)]),
    }
    command = [
        sys.executable,
        "runtests.py",
        "--settings=suite_settings",
        f"--parallel={parallel}",
        "--noinput",
        *labels,
    ]
    log = CACHE / f"suite-{name}.log"
    started = time.monotonic()
    with log.open("w") as out:
        subprocess.run(
            command, cwd=tests, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    text = log.read_text()
    if not re.search(r"^Ran \d+ tests?", text, re.MULTILINE):
        raise SystemExit(f"{name}: the suite did not run, see {log}")
    summary = [
        line for line in text.splitlines() if line.startswith(("Ran ", "OK", "FAILED"))
    ]
    print(
        f"{name}: {' '.join(summary)} in {time.monotonic() - started:.0f} s ({log})",
        flush=True,
    )
    return {where for _, _, where in _OUTCOME.findall(text)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labels", nargs="*")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument(
        "--config",
        action="append",
        choices=sorted(CONFIGS),
        help="selecto_pool configuration(s) to run (default: defaults, pool-dict)",
    )
    parser.add_argument(
        "--options", type=json.loads, help="OPTIONS of one more configuration, JSON"
    )
    parser.add_argument(
        "--mysql", action="store_true", help="on a throwaway MariaDB instead"
    )
    args = parser.parse_args()
    configs = {name: CONFIGS[name] for name in args.config or ()}
    if args.options is not None:
        configs["custom"] = args.options
    configs = configs or {name: CONFIGS[name] for name in ("defaults", "pool-dict")}
    if args.mysql and (refused := POSTGRESQL_ONLY_CONFIGS & set(configs)):
        parser.error(f"--config {', '.join(sorted(refused))} is PostgreSQL only")
    engines = MYSQL_ENGINES if args.mysql else ENGINES
    labels = args.labels or (MYSQL_LABELS if args.mysql else LABELS)
    url = None if args.mysql else os.environ.get("DATABASE_URL")
    server: Any = None
    if args.mysql:
        from testproject.mariaserver import LocalMariaDB

        server = LocalMariaDB().start()
        url = server.url
    elif not url:
        from testproject.pgserver import LocalPostgres

        server = LocalPostgres().start()
        url = server.url
    try:
        stock = run(engines["stock"], {}, "stock", labels, args.parallel, url)
        ours = {
            name: run(engines["selecto"], options, name, labels, args.parallel, url)
            for name, options in configs.items()
        }
    finally:
        if server:
            server.destroy()
    print(f"failing with the stock backend: {len(stock)}")
    regressions = 0
    for name, failing in ours.items():
        only_ours = sorted(failing - stock)
        regressions += len(only_ours)
        print(f"{name} ({json.dumps(configs[name])}): {len(failing)} failing")
        for test in only_ours:
            print(f"  only with selecto_pool: {test}")
        print(f"  {len(only_ours)} passed with stock but fail with selecto_pool")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
