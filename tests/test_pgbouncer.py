"""Behind PgBouncer in transaction mode (Debian's 1.18: no prepared statements)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import environ
import pytest
from django.db import connections

from selecto_pool.backend.base import DatabaseWrapper

from .support import pgbouncer, postgres
from .support.clients import run_threads
from .support.database import conninfo_of, wrapper_for_settings

pytestmark = pytest.mark.skipif(
    not pgbouncer.available(), reason="Debian's pgbouncer package is not installed"
)


@pytest.fixture
def bouncer(transactional_db: None) -> Iterator[pgbouncer.PgBouncer]:
    server = postgres.local_server()
    if server is None:
        pytest.skip("needs the suite's own server (DATABASE_URL points elsewhere)")
    bouncer = pgbouncer.PgBouncer(server)
    yield bouncer
    bouncer.stop()


def through(bouncer: pgbouncer.PgBouncer, alias: str, **pool: Any) -> DatabaseWrapper:
    info = conninfo_of("default")
    url = f"postgres://{info['user']}:x@127.0.0.1:{bouncer.port}/{info['dbname']}"
    settings_dict = {
        **environ.Env.db_url_config(url),
        "ENGINE": "selecto_pool.backend",
        "OPTIONS": {"pool": {"pool_size": 2, "max_overflow": 2, **pool}},
    }
    return wrapper_for_settings(settings_dict, alias)


def count(wrapper: DatabaseWrapper, in_atomic: bool) -> int:
    try:
        if in_atomic:
            wrapper.set_autocommit(False)
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM library_author WHERE id > %s", [0])
            (result,) = cursor.fetchone()
        if in_atomic:
            wrapper.commit()
        return result
    finally:
        wrapper.close()


def test_transaction_mode_option_never_prepares(
    bouncer: pgbouncer.PgBouncer, django_db_blocker: Any
) -> None:
    wrapper = through(bouncer, "bounced", pgbouncer="transaction")
    with django_db_blocker.unblock():

        def requests(index: int) -> list[int]:
            mine = wrapper.copy()  # a wrapper per thread, as Django has
            return [count(mine, in_atomic=(index + n) % 2 == 0) for n in range(30)]

        assert run_threads(6, requests) == [[0] * 30] * 6
        assert wrapper.pool.stats().cache_statements == 0
        wrapper.close_pool()


def test_without_the_option_preparing_stops_by_itself(
    bouncer: pgbouncer.PgBouncer,
    django_db_blocker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A connection stops preparing at its first vanished statement, and the
    # pool at the third: three connections taken in turn over two backends.
    info = conninfo_of("default")
    bouncer.open_server_connections(info["dbname"], info["user"], count=2)
    wrapper = through(
        bouncer, "bounced_auto", prepare_threshold=1, pool_size=3, max_overflow=0
    )
    with django_db_blocker.unblock(), caplog.at_level(logging.WARNING, "selecto_pool"):
        results = [count(wrapper, in_atomic=False) for _ in range(40)]
        assert results == [0] * 40
        assert "stops preparing statements" in caplog.text
        misses = wrapper.pool.stats().cache_misses
        for _ in range(10):
            count(wrapper, in_atomic=True)
        assert wrapper.pool.stats().cache_misses == misses
        wrapper.close_pool()


def test_the_option_is_validated() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="'transaction-prepared'"):
        _ = through_options({"pgbouncer": "statement"})


def through_options(pool: dict[str, Any]) -> Any:
    settings_dict = {**connections["default"].settings_dict, "OPTIONS": {"pool": pool}}
    return wrapper_for_settings(settings_dict, "validated").pool_options
