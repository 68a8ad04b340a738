"""What one simulated request does, for each workload.

A request is bracketed by Django's ``request_started``/``request_finished``
signals, as the WSGI and ASGI handlers send them: their ``close_old_connections``
handler is what gives a connection back at the end of a request (to the pool,
or closed, or kept, depending on the configuration). Imported after
``django.setup()``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from django.core import signals
from django.db import DEFAULT_DB_ALIAS, connection
from django.db.models import Avg, Count

from testproject.library.models import Book, Review

from . import fixtures
from .models import Apartment

Body = Callable[[random.Random], None]

# select_related() through the whole chain: an eight-table join.
_CHAIN_PATH = "building__street__district__city__region__country__continent"


class RequestHandler:
    """Stands in for ``WSGIHandler`` as the sender of the request signals."""


def request(body: Body, rng: random.Random) -> None:
    signals.request_started.send(sender=RequestHandler, environ={})
    try:
        body(rng)
    finally:
        signals.request_finished.send(sender=RequestHandler)


def three_queries(rng: random.Random, alias: str = DEFAULT_DB_ALIAS) -> None:
    """A typical view: a primary-key lookup, a join, an aggregate.

    On ``alias``: ``bench.ab`` runs it on each configuration's.
    """
    books = Book.objects.db_manager(alias)
    book_id = rng.randint(1, fixtures.BOOKS)
    books.get(pk=book_id)
    list(
        Review.objects.db_manager(alias)
        .select_related("book__author", "book__publisher")
        .filter(book_id=book_id)[:5]
    )
    books.filter(author_id=rng.randint(1, fixtures.AUTHORS)).aggregate(
        books=Count("id"), pages=Avg("pages")
    )


def planning_heavy(rng: random.Random) -> None:
    """One row through an eight-table join, filtered at both ends."""
    list(
        Apartment.objects.select_related(_CHAIN_PATH).filter(
            pk=rng.randint(1, fixtures.CHAIN_ROWS[-1]),
            **{f"{_CHAIN_PATH}__rank__gte": 0},
        )[:1]
    )


def checkout_only(rng: random.Random) -> None:
    """Take a connection and give it back: the pool's overhead, no query."""
    connection.ensure_connection()


BODIES: dict[str, Body] = {
    "three_queries": three_queries,
    "planning_heavy": planning_heavy,
    "checkout_only": checkout_only,
}
