"""Client CPU per operation, configurations side by side: ``python -m bench --ab``.

Separate processes differ by 15-20 % in speed on a shared or virtual
machine, more than the pools differ. Here every configuration is an alias of
one process, and their operations run in interleaved rounds (ABCD, DCBA,
...), timed with ``time.process_time()``: the client's CPU only, so the
server's share and waiting are left out. A checkout ends the way a request
ends, with ``close_if_unusable_or_obsolete()``.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

#: Operations, and how many of each make one timed round.
ROUNDS = 7
OPERATIONS: dict[str, int] = {"checkout": 20_000, "three_queries": 500}


def configure(configs: list[str], app_name: str) -> None:
    """Django settings with one alias per configuration (``default``: the first)."""
    import environ

    from .configs import CONFIGS, database
    from .worker import setup_django

    base = environ.Env.db_url_config(os.environ["DATABASE_URL"])
    aliases = {name: database(CONFIGS[name], base, app_name, 4) for name in configs}
    setup_django({"default": aliases[configs[0]], **aliases}, ["selecto_pool"])


def _operations(alias: str, rng: random.Random) -> dict[str, Callable[[], None]]:
    from django.db import connections
    from django.db.models import Avg, Count

    from testproject.library.models import Book, Review

    from . import fixtures

    wrapper = connections[alias]

    def checkout() -> None:
        wrapper.ensure_connection()
        wrapper.close_if_unusable_or_obsolete()

    def three_queries() -> None:
        """bench.cycles.three_queries, on this alias."""
        book_id = rng.randint(1, fixtures.BOOKS)
        Book.objects.using(alias).get(pk=book_id)
        reviews = Review.objects.using(alias).select_related(
            "book__author", "book__publisher"
        )
        list(reviews.filter(book_id=book_id)[:5])
        books = Book.objects.using(alias)
        books.filter(author_id=rng.randint(1, fixtures.AUTHORS)).aggregate(
            books=Count("id"), pages=Avg("pages")
        )
        wrapper.close_if_unusable_or_obsolete()

    return {"checkout": checkout, "three_queries": three_queries}


def measure(configs: list[str]) -> dict[str, Any]:
    """{operation: {config: [us per operation, one per round]}}, in one process."""
    rng = random.Random(1)
    operations = {name: _operations(name, rng) for name in configs}
    for name in configs:  # warm up: pools open, statements prepared
        for operation, count in OPERATIONS.items():
            for _ in range(count // 10):
                operations[name][operation]()
    samples: dict[str, dict[str, list[float]]] = {
        operation: {name: [] for name in configs} for operation in OPERATIONS
    }
    for round_number in range(ROUNDS):
        order = configs if round_number % 2 == 0 else configs[::-1]
        for operation, count in OPERATIONS.items():
            for name in order:
                run = operations[name][operation]
                started = time.process_time()
                for _ in range(count):
                    run()
                elapsed = time.process_time() - started
                samples[operation][name].append(round(elapsed / count * 1e6, 2))
    return samples


def shut_down() -> None:
    from django.db import connections

    for wrapper in connections.all():
        wrapper.close()
        if getattr(wrapper, "pool", None) is not None:
            wrapper.close_pool()


def table(samples: dict[str, dict[str, list[float]]]) -> str:
    lines = [f"client CPU per operation, median of {ROUNDS} interleaved rounds"]
    for operation, by_config in samples.items():
        reference = statistics.median(next(iter(by_config.values())))
        for name, values in by_config.items():
            median = statistics.median(values)
            lines.append(
                f"  {operation:14} {name:16} {median:9.2f} us "
                f"(min {min(values):9.2f})  x first {median / reference:5.2f}"
            )
    return "\n".join(lines)
