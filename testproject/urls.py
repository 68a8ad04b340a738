"""URLs of the demo project: one page, the kind of request a pool serves all day."""

from __future__ import annotations

from django.urls import include, path

from testproject.library import views

urlpatterns = [
    path("", views.index, name="index"),
    path("", include("selecto_pool.urls")),
]
