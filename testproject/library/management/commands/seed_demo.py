"""Fill the demo catalogue with the same small data set on every machine."""

from __future__ import annotations

import datetime
import random

from django.core.management.base import BaseCommand
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from testproject.library.models import Author, Book, Publisher, Review

AUTHORS, PUBLISHERS, BOOKS, REVIEWS = 10, 5, 200, 600
FIRST = ["Ada", "Boris", "Clara", "Dmitri", "Elena", "Farid", "Greta", "Hugo"]
LAST = ["Adler", "Brandt", "Castro", "Dahl", "Eze", "Fontaine", "Grimm", "Holm"]
WORDS = ["Silent", "Northern", "Paper", "Glass", "Winter", "Hidden", "Last", "Iron"]
NOUNS = ["Harbour", "Index", "Garden", "Ledger", "Signal", "Archive", "Bridge", "Tide"]
OPINIONS = ["Could not put it down.", "Slow start, strong finish.", "Not for me."]


class Command(BaseCommand):
    help = "Create the demo data set (idempotent: does nothing if books exist)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            choices=tuple(connections),
            help="Database to seed. Defaults to the 'default' database.",
        )

    def handle(self, *args, database: str, **options):
        with transaction.atomic(using=database):
            if Book.objects.using(database).exists():
                self.stdout.write("Demo data already there.")
                return
            seed(database, random.Random(2024))
        self.stdout.write(
            self.style.SUCCESS(
                f"Created {AUTHORS} authors, {PUBLISHERS} publishers, "
                f"{BOOKS} books and {REVIEWS} reviews."
            )
        )


def seed(database: str, rng: random.Random) -> None:
    """Create the rows with a few bulk inserts; ``rng`` makes them deterministic."""
    names = [f"{first} {last}" for first in FIRST for last in LAST]
    authors = Author.objects.using(database).bulk_create(
        Author(name=name) for name in rng.sample(names, AUTHORS)
    )
    publishers = Publisher.objects.using(database).bulk_create(
        Publisher(name=f"{noun} Press") for noun in NOUNS[:PUBLISHERS]
    )
    first_day = datetime.date(1990, 1, 1)
    books = Book.objects.using(database).bulk_create(
        Book(
            title=f"The {rng.choice(WORDS)} {rng.choice(NOUNS)} ({number})",
            author=rng.choice(authors),
            publisher=rng.choice(publishers),
            published=first_day + datetime.timedelta(days=rng.randrange(12_000)),
            pages=rng.randrange(80, 900),
        )
        for number in range(1, BOOKS + 1)
    )
    Review.objects.using(database).bulk_create(
        Review(
            book=rng.choice(books),
            rating=rng.randint(1, 5),
            body=rng.choice(OPINIONS),
        )
        for _ in range(REVIEWS)
    )
