"""The benchmark's schema and data, made once per run in a fresh database.

Row ids are 1..N (a new database, one bulk insert per table), so that the
request bodies can pick ids without asking the database first.
"""

from __future__ import annotations

from django.core.management import call_command
from django.db import connection, transaction

AUTHORS = 200
PUBLISHERS = 20
BOOKS = 2000
REVIEWS = 6000
#: Rows per table of the chain, root first (see ``bench.models.CHAIN``).
CHAIN_ROWS = (4, 16, 64, 256, 512, 1024, 2048, 4096)


def create() -> None:
    """Create the tables (migrations, and syncdb for the bench app) and fill them."""
    call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
    with transaction.atomic():
        _fill_library()
        _fill_chain()
    with connection.cursor() as cursor:
        # Fresh statistics, so that every configuration plans the same way.
        if connection.vendor == "mysql":
            tables = connection.introspection.table_names(cursor)
            cursor.execute(f"ANALYZE TABLE {', '.join(tables)}")
            cursor.fetchall()
        else:
            cursor.execute("ANALYZE")


def _fill_library() -> None:
    import datetime

    from testproject.library.models import Author, Book, Publisher, Review

    Author.objects.bulk_create(
        Author(name=f"Author {i}") for i in range(1, AUTHORS + 1)
    )
    Publisher.objects.bulk_create(
        Publisher(name=f"Publisher {i}") for i in range(1, PUBLISHERS + 1)
    )
    first_day = datetime.date(2000, 1, 1)
    Book.objects.bulk_create(
        Book(
            title=f"Book {i}",
            author_id=i % AUTHORS + 1,
            publisher_id=i % PUBLISHERS + 1,
            published=first_day + datetime.timedelta(days=i),
            pages=100 + i % 400,
        )
        for i in range(1, BOOKS + 1)
    )
    Review.objects.bulk_create(
        Review(book_id=i % BOOKS + 1, rating=i % 5 + 1, body=f"Review {i}")
        for i in range(1, REVIEWS + 1)
    )


def _fill_chain() -> None:
    from .models import CHAIN

    parent_rows = 0
    for (model, parent), rows in zip(CHAIN, CHAIN_ROWS, strict=True):
        objects = []
        for i in range(1, rows + 1):
            obj = model(name=f"{model.__name__} {i}", rank=i % 100)
            if parent is not None:
                setattr(obj, f"{parent}_id", i % parent_rows + 1)
            objects.append(obj)
        model.objects.bulk_create(objects)
        parent_rows = rows
