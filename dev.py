#!/usr/bin/env python3
"""Developer entry point: ``python3 dev.py test [PYTEST ARGS]`` or ``dev.py demo``.

Standard library only, so that a fresh clone needs nothing but Python 3.10+: it
keeps ``.venv`` up to date with ``pip install -e .[test]`` (``.[test,bench]``
for ``dev.py bench``; ``mysql`` too where mysqlclient can be built) and runs
the tool from there.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
# The sha256 of the pyproject.toml last installed, so unchanged deps cost nothing.
STAMP = VENV / "selecto-dev.stamp"


def check(*cmd: str | Path) -> None:
    """Run a setup step; stop with its exit code if it fails."""
    returncode = subprocess.call([str(part) for part in cmd], cwd=ROOT)
    if returncode:
        raise SystemExit(returncode)


def replace_with(*cmd: str | Path) -> NoReturn:
    """Become ``cmd``: Ctrl-C, signals and the exit code are then its own.

    A child process would need signals forwarded, and a second SIGINT could cut
    short pgserver while it stops PostgreSQL.
    """
    argv = [str(part) for part in cmd]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def ensure_venv(
    extras: tuple[str, ...] = ("test",), optional: tuple[str, ...] = ()
) -> None:
    """Create ``.venv`` and install the project into it when pyproject changed.

    The stamp also lists the extras installed, so that ``bench`` adds its own
    once and ``test`` afterwards doesn't reinstall. ``optional`` extras are
    installed too if they can be (``mysql`` is built from source); if not,
    the others are, and the tests that need them are skipped.
    """
    if not PYTHON.exists():
        print(f"dev.py: creating {VENV.name}", flush=True)
        check(sys.executable, "-m", "venv", VENV)
        check(PYTHON, "-m", "pip", "install", "--upgrade", "pip")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    stamp = STAMP.read_text().split() if STAMP.exists() else []
    installed: set[str] = set()
    if stamp[:1] == [digest]:
        # A stamp without extras was written by `test`.
        installed = set(stamp[1].split(",")) if len(stamp) > 1 else {"test"}
    if set(extras) | set(optional) <= installed:
        return
    wanted = ",".join(sorted(installed | set(extras) | set(optional)))
    print(f"dev.py: installing -e .[{wanted}]", flush=True)
    install = [PYTHON, "-m", "pip", "install", "-e"]
    returncode = subprocess.call([*map(str, install), f".[{wanted}]"], cwd=ROOT)
    if returncode:
        if not optional:
            raise SystemExit(returncode)
        print(
            f"dev.py: could not install the {', '.join(optional)} extra; the "
            "tests that need it will be skipped",
            flush=True,
        )
        wanted = ",".join(sorted((installed | set(extras)) - set(optional)))
        check(*install, f".[{wanted}]")
    STAMP.write_text(f"{digest} {wanted}\n")


def apt_install(*packages: str) -> bool:
    """Install Debian packages if we can (root, apt-get); False if we can't."""
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return False
    install = ["apt-get", "install", "-y", "-q", *packages]
    quiet = {
        "stdout": subprocess.DEVNULL,
        "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    }
    if subprocess.call(install, **quiet) != 0:
        subprocess.call(["apt-get", "update", "-q"], **quiet)
        subprocess.call(install, **quiet)
    return True


def ensure_pgbouncer() -> None:
    """Debian's pgbouncer, for tests/test_pgbouncer.py (skipped without it).

    Installed when missing, on Debian-like machines where we are root (CI).
    """
    if shutil.which("pgbouncer") or Path("/usr/sbin/pgbouncer").exists():
        return
    if not apt_install("pgbouncer"):
        print("dev.py: no pgbouncer; its tests will be skipped", flush=True)


def mysql_client_headers() -> bool:
    """Whether mysqlclient can be built here: pkg-config knows a client library
    (the names its setup.py looks for)."""
    return bool(shutil.which("pkg-config")) and any(
        subprocess.call(["pkg-config", "--exists", name]) == 0
        for name in ("mysqlclient", "mariadb", "libmariadb")
    )


def ensure_mariadb() -> tuple[str, ...]:
    """Debian's MariaDB server and client headers, for tests/mysql (skipped
    without them). Installed when missing, where we are root on Debian (CI).

    Returns the extras to install if possible: ``mysql`` (mysqlclient, built
    from source: PyPI has no Linux wheel) when the headers are there.
    """
    server = shutil.which("mariadbd") or Path("/usr/sbin/mariadbd").exists()
    installed = server and mysql_client_headers()
    if not installed and not apt_install(
        "mariadb-server", "libmariadb-dev", "pkg-config"
    ):
        print("dev.py: no MariaDB; the MySQL tests will be skipped", flush=True)
    return ("mysql",) if mysql_client_headers() else ()


def test(pytest_args: list[str]) -> NoReturn:
    """Lint, formatting, layers and types first (they are quick), then the suite."""
    ensure_pgbouncer()
    ensure_venv(optional=ensure_mariadb())
    check(PYTHON, "-m", "ruff", "check", ".")
    check(PYTHON, "-m", "ruff", "format", "--check", ".")
    check(VENV / "bin" / "lint-imports", "--no-cache")
    check(PYTHON, "-m", "mypy")
    replace_with(PYTHON, "-m", "pytest", *pytest_args)


def demo(port: int) -> NoReturn:
    """Serve the demo project, on an embedded PostgreSQL unless DATABASE_URL is set."""
    ensure_venv()
    serve = [PYTHON, "manage.py", "demo", "--port", str(port)]
    if os.environ.get("DATABASE_URL"):
        replace_with(*serve)
    # pgserver keeps the cluster in .pgdata across runs and stops it on exit.
    pgserver = [PYTHON, "-m", "testproject.pgserver", "run", "--data", ".pgdata"]
    replace_with(*pgserver, "--", *serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dev.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "test",
        help="ruff, import layers, mypy, then pytest (other arguments: pytest's)",
    )
    demo_parser = commands.add_parser("demo", help="run the demo site")
    demo_parser.add_argument("--port", type=int, default=8000, help="default: 8000")
    commands.add_parser(
        "django-suite",
        help="Django's own tests, stock backend vs selecto_pool (see tools/)",
    )
    commands.add_parser(
        "bench",
        help="benchmarks against Django's own options (see docs/benchmarks.md; "
        "other arguments: python -m bench's, e.g. --quick, --ab, "
        "--profile CONFIG:WORKLOAD)",
    )
    # Further commands get a subparser here and a function above.
    return parser


def main(argv: list[str]) -> None:
    os.chdir(ROOT)
    if argv[:1] == ["test"]:
        # Everything after "test" is pytest's, verbatim: -k, -x, paths, even -h.
        test(argv[1:])
    if argv[:1] == ["django-suite"]:
        ensure_venv(optional=ensure_mariadb() if "--mysql" in argv else ())
        replace_with(PYTHON, "-m", "tools.django_suite", *argv[1:])
    if argv[:1] == ["bench"]:
        # Its own PostgreSQL or MariaDB, started and stopped by bench (or
        # DATABASE_URL).
        ensure_venv(
            ("test", "bench"), optional=ensure_mariadb() if "--mysql" in argv else ()
        )
        replace_with(PYTHON, "-m", "bench", *argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        demo(args.port)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        sys.exit(130)
