"""Test-database creation that knows several aliases may share one pool target."""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import creation as postgresql

from .._process import registry


class DatabaseCreation(postgresql.DatabaseCreation):
    # Django closes the pool of this alias only; aliases mirroring it (or with
    # identical settings) have pools connected to the same database, which
    # would make DROP/CREATE DATABASE fail with "being accessed by other users".
    # Django's private hooks (absent from django-stubs; see _compat.check).
    def _clone_test_db(self, suffix: str, verbosity: int, keepdb: bool = False) -> None:
        registry.close_pools_of_database(self.connection.settings_dict["NAME"])
        super()._clone_test_db(suffix, verbosity, keepdb)  # type: ignore[misc]

    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> Any:
        registry.close_pools_of_database(test_database_name)
        return super()._destroy_test_db(test_database_name, verbosity)  # type: ignore[misc]
