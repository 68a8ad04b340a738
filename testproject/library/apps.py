"""The demo app: a small library catalogue to query through the pool."""

from __future__ import annotations

from django.apps import AppConfig


class LibraryConfig(AppConfig):
    name = "testproject.library"
    label = "library"
    verbose_name = "Demo library"
