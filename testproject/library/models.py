"""A catalogue shaped like a typical app's: foreign keys to join, rows to count."""

from __future__ import annotations

from django.db import models


class Author(models.Model):
    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name


class Publisher(models.Model):
    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name


class Book(models.Model):
    title = models.CharField(max_length=200)
    author = models.ForeignKey(Author, models.CASCADE, related_name="books")
    publisher = models.ForeignKey(Publisher, models.CASCADE, related_name="books")
    published = models.DateField()
    pages = models.PositiveIntegerField()

    def __str__(self) -> str:
        return self.title


class Review(models.Model):
    book = models.ForeignKey(Book, models.CASCADE, related_name="reviews")
    rating = models.PositiveSmallIntegerField()
    body = models.TextField()

    class Meta:
        # A list is what Django documents; it reads Meta once and never mutates it.
        constraints = [  # noqa: RUF012
            models.CheckConstraint(
                condition=models.Q(rating__gte=1, rating__lte=5),
                name="library_review_rating_1_to_5",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rating}/5 for {self.book_id}"
