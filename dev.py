#!/usr/bin/env python3
"""Developer entry point: ``python3 dev.py test [PYTEST ARGS]`` or ``dev.py demo``.

Standard library only (``testproject.runstate`` too), so that a fresh clone
needs nothing but Python 3.10+: it keeps ``.venv`` up to date with
``pip install -e .[test]`` (``.[test,bench]`` for ``dev.py bench``; ``mysql``
too where mysqlclient can be built) and runs the tool from there.

``dev.py test --versions oldest``, ``newest`` and ``django-6.0`` run the suite
in ``.venv-oldest``, ``.venv-newest`` and ``.venv-django-6.0`` instead (see
``COMBINATIONS``).
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from testproject import runstate

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
# The sha256 of the pyproject.toml last installed, so unchanged deps cost nothing.
STAMP_NAME = "selecto-dev.stamp"

#: ``dev.py test --versions NAME``: the versions under test, each in its venv.
COMBINATIONS = {
    "oldest": "the oldest Python here that pyproject.toml allows, with the lowest "
    "Django, psycopg and psycopg_pool versions it allows",
    "newest": "the newest Python here, with the newest Django, psycopg and "
    "psycopg_pool on the index, past pyproject.toml's caps",
    "django-6.0": "Django 6.0, the release between the LTS and the newest, on "
    "Python 3.12 (or the newest Python here it supports)",
}
#: The Django series of the middle combination, and the Python it first needs.
MIDDLE_DJANGO = ("6.0", (3, 12))

# Printed before each suite, from the venv that runs it.
VERSIONS_SCRIPT = """\
import platform, django, psycopg, psycopg_pool
libpq = psycopg.pq.version()
print(
    f"dev.py: testing with Python {platform.python_version()}, "
    f"Django {django.__version__}, psycopg {psycopg.__version__} "
    f"({psycopg.pq.__impl__}, libpq {libpq // 10000}.{libpq % 10000}), "
    f"psycopg_pool {psycopg_pool.__version__}",
    flush=True,
)
"""

# The floors of the runtime dependencies, as pins (django==5.2...), from the
# metadata of the project installed in the venv that runs it.
FLOORS_SCRIPT = """\
from importlib.metadata import requires
from packaging.requirements import Requirement
for line in requires("selecto-pool") or []:
    requirement = Requirement(line)
    if requirement.marker is None:  # not an extra's
        for spec in requirement.specifier:
            if spec.operator == ">=":
                print(f"{requirement.name}=={spec.version}")
"""


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
    extras: tuple[str, ...] = ("test",),
    optional: tuple[str, ...] = (),
    venv: Path = VENV,
    python: str = sys.executable,
    then: Callable[[Path], None] | None = None,
) -> Path:
    """Create ``venv`` and install the project into it when pyproject changed.

    The stamp also lists the extras installed, so that ``bench`` adds its own
    once and ``test`` afterwards doesn't reinstall. ``optional`` extras are
    installed too if they can be (``mysql`` is built from source); if not,
    the others are, and the tests that need them are skipped.
    ``then(venv_python)`` runs after each install (the oldest combination
    pins its floors there). Returns the venv's python.
    """
    venv_python = venv / "bin" / "python"
    stamp_path = venv / STAMP_NAME
    if venv_python.exists() and _version_of(venv_python) != _version_of(python):
        print(f"dev.py: {venv.name} has another Python; recreating it", flush=True)
        shutil.rmtree(venv)
    if not venv_python.exists():
        print(f"dev.py: creating {venv.name}", flush=True)
        check(python, "-m", "venv", venv)
        check(venv_python, "-m", "pip", "install", "--upgrade", "pip")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    stamp = stamp_path.read_text().split() if stamp_path.exists() else []
    installed: set[str] = set()
    if stamp[:1] == [digest]:
        # A stamp without extras was written by `test`.
        installed = set(stamp[1].split(",")) if len(stamp) > 1 else {"test"}
    if set(extras) | set(optional) <= installed:
        return venv_python
    wanted = ",".join(sorted(installed | set(extras) | set(optional)))
    print(f"dev.py: installing -e .[{wanted}] into {venv.name}", flush=True)
    install = [venv_python, "-m", "pip", "install", "-e"]
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
    if then is not None:
        then(venv_python)
    stamp_path.write_text(f"{digest} {wanted}\n")
    return venv_python


def _version_of(python: str | Path, *, makes_venvs: bool = False) -> str:
    """``3.11`` for a Python 3.11 interpreter; empty if it can't run (or,
    with ``makes_venvs``, can't create a venv with pip)."""
    script = "import sys; print('%d.%d' % sys.version_info[:2])"
    if makes_venvs:
        script = f"import ensurepip, venv; {script}"
    try:
        result = subprocess.run(
            [str(python), "-c", script], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def pythons() -> dict[tuple[int, int], str]:
    """The Pythons on this machine that can make a venv, by (major, minor).

    On PATH as ``python3.N``, and pyenv's installs (whose shims only run the
    selected version).
    """
    candidates: list[str | None] = [sys.executable]
    candidates += [shutil.which(f"python3.{minor}") for minor in range(10, 30)]
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates += sorted(map(str, pyenv.glob("versions/3.*/bin/python3")))
    found: dict[tuple[int, int], str] = {}
    for candidate in dict.fromkeys(filter(None, candidates)):
        if version := _version_of(candidate, makes_venvs=True):
            major, minor = map(int, version.split("."))
            found.setdefault((major, minor), candidate)
    return found


def lowest_python() -> tuple[int, int]:
    """``requires-python``'s floor in pyproject.toml (3.10)."""
    text = (ROOT / "pyproject.toml").read_text()
    floor = re.search(r'^requires-python = ">=(\d+)\.(\d+)"', text, re.MULTILINE)
    if floor is None:
        raise SystemExit('dev.py: pyproject.toml has no requires-python = ">=3.N"')
    return int(floor[1]), int(floor[2])


def _dotted(version: tuple[int, int]) -> str:
    return ".".join(map(str, version))


def pin_floors(venv_python: Path) -> None:
    """Install the lowest versions of the runtime dependencies pyproject allows."""
    floors = subprocess.run(
        [str(venv_python), "-c", FLOORS_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    constraints = venv_python.parent.parent / "floors.txt"
    constraints.write_text(floors)
    print(f"dev.py: pinning {' '.join(floors.split())}", flush=True)
    install = [venv_python, "-m", "pip", "install", "-e", ".[test]"]
    check(*install, "--constraint", constraints)


def combination_venv(name: str, optional: tuple[str, ...] = ()) -> Path:
    """Set up the venv of combination ``name``; return its python."""
    found = pythons()
    floor = lowest_python()
    allowed = sorted(version for version in found if version >= floor)
    if not allowed:
        raise SystemExit(f"dev.py: no Python {_dotted(floor)} or later found here")
    if name == "oldest":
        version = allowed[0]
        if version != floor:
            print(
                f"dev.py: no Python {_dotted(floor)} here (pyproject.toml's lowest); "
                f"the oldest combination runs on Python {_dotted(version)}",
                flush=True,
            )
        return ensure_venv(
            optional=optional,
            venv=ROOT / ".venv-oldest",
            python=found[version],
            then=pin_floors,
        )
    if name == "django-6.0":
        return middle_django_venv(found, optional)
    version = allowed[-1]
    venv_python = ensure_venv(
        optional=optional, venv=ROOT / ".venv-newest", python=found[version]
    )
    # Every run: a release since the last one is tested as soon as it is out,
    # past the caps that users get (pip warns about them; that is the point).
    print("dev.py: upgrading Django, psycopg and psycopg_pool", flush=True)
    upgrade = [venv_python, "-m", "pip", "install", "-q", "--upgrade"]
    check(*upgrade, "django", "psycopg[binary,pool]", "psycopg-pool")
    _say_if_django_needs_newer_python(venv_python, _dotted(version))
    return venv_python


def middle_django_venv(
    found: dict[tuple[int, int], str], optional: tuple[str, ...]
) -> Path:
    """The venv of the Django release between the oldest and the newest."""
    series, needs = MIDDLE_DJANGO
    able = sorted(version for version in found if version >= needs)
    if not able:
        print(
            f"dev.py: Django {series} needs Python {_dotted(needs)} or later, "
            "and there is none here: skipped",
            flush=True,
        )
        raise SystemExit(0)
    # Its lowest Python: the one neither the default nor newest run uses.
    major, minor = map(int, series.split("."))
    pin = f"django>={series},<{major}.{minor + 1}"

    def pin_django(venv_python: Path) -> None:
        check(venv_python, "-m", "pip", "install", "-q", pin)

    return ensure_venv(
        optional=optional,
        venv=ROOT / f".venv-django-{series}",
        python=found[able[0]],
        then=pin_django,
    )


def _say_if_django_needs_newer_python(venv_python: Path, version: str) -> None:
    """One line when the newest Django doesn't install on the newest Python here."""
    ask = [str(venv_python), "-m", "pip", "index", "versions", "django"]
    index = subprocess.run(
        [*ask, "--python-version", "3.99"], capture_output=True, text=True
    )
    installed = subprocess.run(
        [str(venv_python), "-c", "import django; print(django.__version__)"],
        capture_output=True,
        text=True,
    )
    newest = re.match(r"django \((\S+)\)", index.stdout)
    if newest and installed.stdout.strip() not in ("", newest[1]):
        print(
            f"dev.py: Django {newest[1]} needs a newer Python than {version}, the "
            f"newest here: testing Django {installed.stdout.strip()}",
            flush=True,
        )


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
    """Lint, formatting, layers and types first (they are quick), then the suite.

    ``--versions oldest|newest|django-6.0`` first: the suite only (the code is linted
    once, by the default run), in that combination's venv.
    """
    combination, pytest_args = _versions_option(pytest_args)
    ensure_pgbouncer()
    optional = ensure_mariadb()
    if combination is None:
        python = ensure_venv(optional=optional)
        check(python, "-m", "ruff", "check", ".")
        check(python, "-m", "ruff", "format", "--check", ".")
        check(VENV / "bin" / "lint-imports", "--no-cache")
        check(python, "-m", "mypy")
    else:
        python = combination_venv(combination, optional)
    check(python, "-c", VERSIONS_SCRIPT)
    replace_with(python, "-m", "pytest", *pytest_args)


def _versions_option(args: list[str]) -> tuple[str | None, list[str]]:
    """Split ``--versions NAME`` (or ``--versions=NAME``), if first, from ``args``."""
    if args[:1] == ["--versions"]:
        name, rest = (args[1] if len(args) > 1 else ""), args[2:]
    elif args[:1] and args[0].startswith("--versions="):
        name, rest = args[0].partition("=")[2], args[1:]
    else:
        return None, args
    if name not in COMBINATIONS:
        allowed = ", ".join(COMBINATIONS)
        raise SystemExit(f"dev.py test: --versions {name!r} is not one of: {allowed}")
    return name, rest


def demo(port: int) -> NoReturn:
    """Serve the demo project, on an embedded PostgreSQL unless DATABASE_URL is set.

    The cluster is kept in ``.pgdata`` (or ``$SELECTO_DEMO_DATA``) across runs;
    pgserver records the run there, so that ``manage.py`` in a second shell
    finds its database and a second demo is refused.
    """
    url = f"http://127.0.0.1:{port}/"
    data = runstate.demo_data_dir(ROOT)
    own_database = not os.environ.get("DATABASE_URL")
    if own_database and (run := runstate.running(data)) is not None:
        stop(
            f"the demo is already running {run.describe()}; "
            "stop it with Ctrl-C in its terminal"
        )
    if problem := cannot_listen(port):
        stop(f"{problem}: choose another port with --port")
    python = demo_python()
    serve = [python, "manage.py", "demo", "--port", str(port)]
    if not own_database:
        replace_with(*serve)
    pgserver = [python, "-m", "testproject.pgserver", "run", "--data", data]
    replace_with(*pgserver, "--serves", url, "--", *serve)


def demo_python() -> Path:
    """The Python the demo runs on: ``.venv``'s, kept up to date.

    Unless dev.py runs in a virtualenv that has Django (the suite's demo
    tests run it on the suite's Python, e.g. .venv-newest's or a throwaway
    venv's): then that one. ``ensure_venv()`` would rebuild ``.venv`` with
    that other Python, deleting the one a developer works with.
    """
    if sys.prefix != sys.base_prefix and importlib.util.find_spec("django"):
        return Path(sys.executable)
    ensure_venv()
    return PYTHON


def cannot_listen(port: int) -> str | None:
    """Why runserver could not listen on 127.0.0.1:``port`` (it binds as here)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} of 127.0.0.1 is in use by another program"
            return f"cannot listen on 127.0.0.1:{port} ({exc.strerror})"
    return None


def port_number(value: str) -> int:
    """argparse type: a TCP port."""
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port (1 to 65535)")
    return int(value)


def stop(message: str) -> NoReturn:
    """One line on stderr and exit 1: what went wrong and what to do."""
    print(f"dev.py: {message}", file=sys.stderr)
    raise SystemExit(1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dev.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "test",
        help="ruff, import layers, mypy, then pytest (other arguments: pytest's); "
        "first, --versions oldest: the suite only, on "
        f"{COMBINATIONS['oldest']}; --versions newest: on {COMBINATIONS['newest']}; "
        f"--versions django-6.0: {COMBINATIONS['django-6.0']}",
    )
    demo_parser = commands.add_parser("demo", help="run the demo site")
    demo_parser.add_argument(
        "--port", type=port_number, default=8000, help="default: 8000"
    )
    commands.add_parser(
        "django-suite",
        help="Django's own tests, stock backend vs selecto_pool with no OPTIONS "
        "and with a pool dict (--config, --options: see tools/django_suite.py)",
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
