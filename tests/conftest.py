"""Fixtures shared by the suite; the helpers they use are in ``tests/support``."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from testproject.pgserver import LocalPostgres

from .support.database import Observer, conninfo_of, url_of
from .support.processes import demo_environment


@pytest.fixture
def observer(transactional_db: None) -> Iterator[Observer]:
    with psycopg.connect(**conninfo_of("default"), autocommit=True) as conn:
        yield Observer(conn)


@pytest.fixture(scope="module")
def spare_server() -> Iterator[LocalPostgres]:
    """A server of the module's own, free to be stopped and restarted."""
    with LocalPostgres() as server:
        yield server


@pytest.fixture
def demo_env(transactional_db: None) -> dict[str, str]:
    """The environment of a demo process on the test database."""
    return demo_environment(url_of("default"))
