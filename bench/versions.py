"""What a result depends on, recorded next to it: versions, commit, machine."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg

PACKAGES = (
    "Django",
    "psycopg",
    "psycopg-binary",
    "psycopg-pool",
    "django-db-connection-pool",
    "SQLAlchemy",
    "mysqlclient",
)


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=False
    )
    return result.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def collect(
    root: Path, server_version: str, code_digest: str, server: str = "postgresql"
) -> dict[str, Any]:
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    changed = _git(root, "status", "--porcelain", "--", "selecto_pool")
    return {
        "python": sys.version.split()[0],
        "packages": packages,
        "libpq": psycopg.pq.version(),
        server: server_version,
        "commit": _git(root, "rev-parse", "--short=12", "HEAD"),
        # The last commit that changed selecto_pool/ (HEAD may be a docs one).
        "selecto_pool_commit": _git(
            root, "log", "-1", "--format=%h", "--abbrev=12", "--", "selecto_pool"
        ),
        # Uncommitted changes to selecto_pool/ were measured too.
        "selecto_pool_uncommitted": changed.splitlines(),
        "selecto_pool_digest": code_digest,
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
    }
