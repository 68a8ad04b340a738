"""Configuring MySQL pools: what is accepted, and clear errors for the rest."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

import selecto_pool as sp
from selecto_pool import PoolStartError, _compat
from selecto_pool._config.mysql import resolve_mysql_options
from selecto_pool._conn import mysql_status
from testproject.mariaserver import LocalMariaDB


def resolve(options: dict[str, Any], project: Any = None, **settings: Any) -> Any:
    settings_dict = {"CONN_MAX_AGE": 0, "OPTIONS": options, **settings}
    return resolve_mysql_options("app", settings_dict, project)


def test_pool_options_mean_what_they_mean_on_postgresql() -> None:
    options = resolve(
        {"pool": {"min_size": 3, "max_size": 7, "timeout": 2}, "max_lifetime": "60"}
    )
    assert (options.pool_size, options.max_overflow) == (3, 4)
    assert (options.checkout_timeout, options.max_lifetime) == (2.0, 60.0)
    # What MySQL pools run with, whatever the defaults say.
    assert (options.prepares, options.control, options.pgbouncer) == (
        False,
        False,
        "off",
    )


@pytest.mark.parametrize(
    ("options", "project", "message"),
    [
        (
            {"pool": {"prepare_threshold": 5}},
            None,
            "DATABASES['app']['OPTIONS']['pool']['prepare_threshold'] = 5 is invalid "
            "for a MySQL database (mysqlclient binds parameters on the client: "
            "MySQL connections prepare nothing): expected None, or leave it out.",
        ),
        (
            {"prepared_statement_cache_size": "100"},
            None,
            "DATABASES['app']['OPTIONS']['prepared_statement_cache_size'] = 100 is "
            "invalid for a MySQL database",
        ),
        (
            {},
            {"pgbouncer": "transaction"},
            "SELECTO_POOL['pgbouncer'] = 'transaction' is invalid for a MySQL "
            "database (PgBouncer is for PostgreSQL): expected False",
        ),
        (
            {"pool": {"control": True}},
            None,
            "['control'] = True is invalid for a MySQL database (poolstats and "
            "clearcache reach other processes over LISTEN/NOTIFY, which MySQL "
            "doesn't have)",
        ),
        (
            {"connect_timeout": 3, "pool": {"connection_timeout": 4}},
            None,
            "['connect_timeout'] (mysqlclient's, 3) and the pool option "
            "'connection_timeout' are both set: set only one.",
        ),
        (
            {"pool": {"pool_size": "ten"}},
            None,
            "['pool_size'] = 'ten' is invalid: expected an integer >= 0, at most",
        ),
        (
            {"pool": {"reset": "session"}},
            None,
            "['reset'] = 'session' is invalid for a MySQL database (its resets "
            "are PostgreSQL statements",
        ),
        (
            {"pool": {"prepared_statement_cache_mib": 8}},
            None,
            "['prepared_statement_cache_mib'] = 8 is invalid for a MySQL database",
        ),
    ],
)
def test_options_without_meaning_on_mysql_are_errors(
    options: dict[str, Any], project: Any, message: str
) -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        resolve(options, project)
    assert message in str(info.value)


def test_turning_postgresql_features_off_is_accepted() -> None:
    options = resolve(
        {
            "pool": {"prepare_threshold": None, "control": False},
            "prepared_statement_cache_size": 0,
            "pgbouncer": "false",
        }
    )
    assert options.pool_size == 10


def test_conn_max_age_is_refused_on_a_pooled_alias() -> None:
    with pytest.raises(ImproperlyConfigured, match="CONN_MAX_AGE"):
        resolve({}, CONN_MAX_AGE=60)
    assert not resolve({"pool": False}, CONN_MAX_AGE=60).enabled


@pytest.mark.parametrize(
    ("adapter", "options", "message"),
    [
        ("oracle", {}, "start_pool() adapter = 'oracle' is invalid: expected "),
        (
            "mysql",
            {"prepare_threshold": 3},
            "start_pool(adapter='mysql') option 'prepare_threshold' = 3 is invalid",
        ),
        ("mysql", {"control": False}, "only the ORM's pools"),
    ],
)
def test_start_pool_refuses_what_mysql_pools_cant_do(
    adapter: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        sp.start_pool("mysql://u:p@127.0.0.1/db", adapter=adapter, **options)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://u:s3cret-pw@127.0.0.1/db", "the URL's scheme is 'postgres'"),
        ("mysql://u:s3cret-pw@127.0.0.1:port/db", "invalid connection URL"),
        ({"host": "127.0.0.1", "passwd2": "s3cret-pw"}, "invalid connection"),
    ],
)
def test_bad_connection_settings_never_show_the_password(
    mariadb_server: LocalMariaDB, url: Any, message: str
) -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        sp.start_pool(url, adapter="mysql")
    assert message in str(info.value)
    assert "s3cret-pw" not in str(info.value)


def test_a_wrong_password_fails_at_once_with_the_servers_reason(
    mariadb_server: LocalMariaDB,
) -> None:
    kwargs = {**mariadb_server.connect_kwargs(), "password": "not-the-password"}
    with pytest.raises(PoolStartError) as info:
        sp.start_pool(kwargs, adapter="mysql", name="wrong")
    assert "pool 'wrong' cannot connect" in str(info.value)
    assert "Access denied" in str(info.value)
    assert "not-the-password" not in str(info.value)


def test_the_private_names_used_exist_in_the_installed_versions(
    mariadb_server: LocalMariaDB,
) -> None:
    import MySQLdb

    _compat.check(mysql=True)
    conn = MySQLdb.connect(**mariadb_server.connect_kwargs())
    try:
        assert type(_compat.mysql_native_connection(conn)).__name__ == "PyCapsule"
        assert mysql_status.in_transaction(conn) is False
    finally:
        conn.close()


def test_a_password_written_into_the_host_is_never_shown(
    mariadb_server: LocalMariaDB, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``HOST`` of ``"<password>@127.0.0.1"`` (the password pasted into the
    wrong setting): mysqlclient echoes the host it could not resolve."""
    from selecto_pool._conn.mysql import MySQLDriver

    password = mariadb_server.password
    kwargs = {**mariadb_server.connect_kwargs(), "host": f"{password}@127.0.0.1"}
    kwargs.pop("unix_socket", None)
    with pytest.raises(PoolStartError) as started:
        sp.start_pool(kwargs, adapter="mysql", name="pasted")
    with pytest.raises(Exception) as connected:
        MySQLDriver("pasted", kwargs).connect()  # what the ORM's pool opens with
    for text in (str(started.value), str(connected.value), caplog.text):
        assert "Unknown server host" in text or text == caplog.text
        assert password not in text
        assert password[:8] not in text
