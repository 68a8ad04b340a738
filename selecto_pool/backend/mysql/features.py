"""Django's MySQL features, pooled by default (see ``backend.features``)."""

from __future__ import annotations

from django.db.backends.mysql import features as mysql

from ..features import PooledFeaturesMixin


class DatabaseFeatures(  # type: ignore[override]  # as backend/features.py
    PooledFeaturesMixin, mysql.DatabaseFeatures
):
    """Django's MySQL features; its pooled-connection test skips too."""
