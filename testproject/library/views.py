"""The demo page: the three queries of a typical request, rendered as plain HTML."""

from __future__ import annotations

from django.db.models import Avg, Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from testproject.library.models import Author, Book


def index(request: HttpRequest) -> HttpResponse:
    """A book by primary key, the 20 newest books, and ratings per author.

    Querysets are evaluated here, so the template cannot add queries: a request
    makes exactly three.
    """
    try:
        book_id = int(request.GET.get("book", "1"))
    except ValueError:
        raise Http404("?book= takes a book id") from None
    book = get_object_or_404(Book, pk=book_id)
    newest = Book.objects.select_related("author", "publisher").order_by(
        "-published", "-pk"
    )[:20]
    authors = Author.objects.annotate(
        average_rating=Avg("books__reviews__rating"),
        review_count=Count("books__reviews"),
    ).order_by("name")
    context = {"book": book, "newest": list(newest), "authors": list(authors)}
    return render(request, "library/index.html", context)
