"""Test-database creation that closes the pools on a database before it goes."""

from __future__ import annotations

from typing import Any

from django.db.backends.mysql import creation as mysql

from ..._process import registry


class DatabaseCreation(mysql.DatabaseCreation):
    # MySQL drops a database in use without complaint, but the pools of every
    # alias on it (aliases mirroring this one too) would keep sessions on a
    # database that no longer exists, or on its namesake with keepdb.
    # Django's private hook (absent from django-stubs; see _compat.check).
    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> Any:
        registry.close_pools_of_database(test_database_name)
        return super()._destroy_test_db(test_database_name, verbosity)  # type: ignore[misc]
