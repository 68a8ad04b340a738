"""Using the ORM through the pool: the same results as the stock backend."""

from __future__ import annotations

import datetime
import threading
import time

import pytest
from django.db import connections, transaction
from django.db.models import Avg, Count

from selecto_pool import CheckoutTimeout, get_pool
from testproject.library.models import Author, Book, Publisher, Review

from .support.clients import run_threads
from .support.database import Observer

ORM_ALIASES = ["default", "unpooled"]


def make_catalogue(alias: str, books: int = 5) -> Author:
    author = Author.objects.using(alias).create(name="Ursula")
    publisher = Publisher.objects.using(alias).create(name="Ace")
    for number in range(books):
        book = Book.objects.using(alias).create(
            title=f"Book {number}",
            author=author,
            publisher=publisher,
            published=datetime.date(1970 + number, 1, 1),
            pages=100 + number,
        )
        Review.objects.using(alias).create(book=book, rating=1 + number % 5, body="")
    return author


@pytest.mark.django_db(databases=ORM_ALIASES, transaction=True)
@pytest.mark.parametrize("alias", ORM_ALIASES)
def test_orm_queries(alias: str) -> None:
    author = make_catalogue(alias)
    books = Book.objects.using(alias)
    assert books.get(pk=books.first().pk).author_id == author.pk
    listed = list(books.select_related("author", "publisher").order_by("-published"))
    assert [book.title for book in listed][:2] == ["Book 4", "Book 3"]
    assert listed[0].publisher.name == "Ace"
    stats = Author.objects.using(alias).annotate(
        reviews=Count("books__reviews"), rating=Avg("books__reviews__rating")
    )
    assert [(a.reviews, a.rating) for a in stats] == [(5, 3.0)]


@pytest.mark.django_db(databases=ORM_ALIASES, transaction=True)
@pytest.mark.parametrize("alias", ORM_ALIASES)
def test_atomic_commits_and_rolls_back(alias: str) -> None:
    with transaction.atomic(using=alias):
        Author.objects.using(alias).create(name="kept")
    with pytest.raises(ZeroDivisionError), transaction.atomic(using=alias):
        Author.objects.using(alias).create(name="dropped")
        1 / 0  # noqa: B018
    connections[alias].close()
    names = list(Author.objects.using(alias).values_list("name", flat=True))
    assert names == ["kept"]


@pytest.mark.django_db(databases=ORM_ALIASES, transaction=True)
@pytest.mark.parametrize("alias", ORM_ALIASES)
def test_threads_each_get_a_connection(alias: str) -> None:
    make_catalogue(alias)

    def request(_: int) -> int:
        return Book.objects.using(alias).count()

    assert run_threads(10, request) == [5] * 10


@pytest.mark.django_db(databases=["small"], transaction=True)
def test_fifty_threads_share_five_connections(observer: Observer) -> None:
    make_catalogue("small")
    connections["small"].close()
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(len(observer.connections_of("selecto-small")))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()

    def request(index: int) -> int:
        total = 0
        for _ in range(5):
            total += Book.objects.using("small").filter(pages__gte=index).count()
            list(Book.objects.using("small").select_related("author")[:3])
            connections["small"].close()  # the end of a request
        return total

    try:
        results = run_threads(50, request)
    finally:
        done.set()
        watcher.join()
    assert results[0] == 25 and len(results) == 50
    assert max(seen) <= 5
    assert len(observer.connections_of("selecto-small")) == 5
    assert get_pool("small").stats().in_use == 0


@pytest.mark.django_db(databases=["tiny"], transaction=True)
def test_orm_checkout_timeout_is_a_django_operational_error() -> None:
    from django.db import OperationalError

    pool = get_pool("tiny")
    held = [pool.getconn(), pool.getconn()]
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError) as info:
            Author.objects.using("tiny").count()
        elapsed = time.monotonic() - started
    finally:
        for conn in held:
            pool.putconn(conn)
    assert isinstance(info.value, CheckoutTimeout)
    # "tiny" has checkout_timeout 0.5 (tests/settings.py): it waited that,
    # then gave up, up to 1 s later when the machine is loaded, where a wait
    # that ignored it would last for good.
    assert 0.5 <= elapsed < 0.5 + 1.0
    assert "'tiny'" in str(info.value)
    assert Author.objects.using("tiny").count() == 0


@pytest.mark.django_db(databases=["default"], transaction=True)
def test_connection_returned_in_a_transaction_is_rolled_back() -> None:
    pool = get_pool("default")

    def leave_a_transaction_open(_: int) -> int:
        transaction.set_autocommit(False)
        Author.objects.create(name="uncommitted")
        connection = connections["default"]
        pid = connection.connection.info.backend_pid
        connection.close()  # back to the pool, mid-transaction
        return pid

    [pid] = run_threads(1, leave_a_transaction_open)
    assert not Author.objects.exists()
    assert pool.stats().rollbacks_on_return == 1
    # Whoever gets that connection next finds it idle and in autocommit.
    for _ in range(pool.stats().connections):
        conn = pool.getconn()
        try:
            assert conn.info.transaction_status.name == "IDLE"
            assert conn.autocommit
            if conn.info.backend_pid == pid:
                break
        finally:
            pool.putconn(conn)
    else:
        pytest.fail("the rolled-back connection was not kept in the pool")
