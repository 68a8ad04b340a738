"""The tiny ASGI Django app that ``bench.asgi`` serves with uvicorn.

Four async views run the same query on pools of 5 connections:

* ``/sync-direct``: the sync direct API called from the async view, the
  mistake of issue #14 (allowed here by ``DJANGO_ALLOW_ASYNC_UNSAFE``, which
  the server's environment sets, or it would raise ``SynchronousOnlyOperation``);
* ``/sync-to-async``: the same call through ``sync_to_async``;
* ``/async``: ``await aexecute()`` on an ``astart_pool()`` pool;
* ``/psycopg``: psycopg_pool's ``AsyncConnectionPool`` used directly.

The pools are started and stopped by the ASGI lifespan (Django's handler
serves HTTP only), as docs/direct-api.md shows. Configured from the
environment: ``DATABASE_URL``, ``BENCH_QUERY_MS``.
"""

from __future__ import annotations

import os
from typing import Any

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-asgi",  # a throwaway app on loopback
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    DATABASES={},
    INSTALLED_APPS=[],
    MIDDLEWARE=[],
    LOGGING_CONFIG=None,
)
django.setup()

import psycopg_pool  # noqa: E402
from asgiref.sync import sync_to_async  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

import selecto_pool as sp  # noqa: E402

URL = os.environ.get("DATABASE_URL", "")
SIZE = 5
QUERY = (
    f"SELECT %s::int, pg_sleep({int(os.environ.get('BENCH_QUERY_MS', '10'))} / 1000.0)"
)
pools: dict[str, Any] = {}


async def sync_direct(request: HttpRequest) -> HttpResponse:
    result = sp.execute(pools["sync"], QUERY, [1])
    return _reply(result.rows[0][0])


async def through_sync_to_async(request: HttpRequest) -> HttpResponse:
    result = await sync_to_async(sp.execute)(pools["sync"], QUERY, [1])
    return _reply(result.rows[0][0])


async def async_api(request: HttpRequest) -> HttpResponse:
    result = await sp.aexecute(pools["async"], QUERY, [1])
    return _reply(result.rows[0][0])


async def psycopg_direct(request: HttpRequest) -> HttpResponse:
    async with pools["psycopg"].connection() as conn:
        cursor = await conn.execute(QUERY, [1])
        row = await cursor.fetchone()
    return _reply(row[0])


def _reply(value: Any) -> HttpResponse:
    body = str(value).encode()
    # A length, not chunks: the benchmark's client reads exactly that.
    return HttpResponse(body, headers={"Content-Length": str(len(body))})


urlpatterns = [
    path("sync-direct", sync_direct),
    path("sync-to-async", through_sync_to_async),
    path("async", async_api),
    path("psycopg", psycopg_direct),
]

django_app = get_asgi_application()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Django for HTTP; the pools' start and stop for the lifespan."""
    if scope["type"] != "lifespan":
        await django_app(scope, receive, send)
        return
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            options = {"pool_size": SIZE, "max_overflow": 0, "checkout_timeout": 30}
            pools["sync"] = await sync_to_async(sp.start_pool)(URL, **options)
            pools["async"] = await sp.astart_pool(URL, **options)
            pools["psycopg"] = psycopg_pool.AsyncConnectionPool(
                URL, min_size=SIZE, max_size=SIZE, open=False, timeout=30
            )
            await pools["psycopg"].open(wait=True)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await pools["psycopg"].close()
            await sp.astop_pool(pools["async"])
            await sync_to_async(sp.stop_pool)(pools["sync"])
            await send({"type": "lifespan.shutdown.complete"})
            return
