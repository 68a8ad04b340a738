"""A chain of eight tables (seven foreign keys) for the planning-heavy query.

Joining all of them leaves PostgreSQL's planner an exhaustive join-order search
(8 relations is ``join_collapse_limit``), which costs far more than running the
query on a few thousand rows: what a prepared statement's cached plan saves.
"""

from __future__ import annotations

from django.db import models


class Place(models.Model):
    """Columns shared by every level, so that filters can touch each table."""

    name = models.CharField(max_length=40, db_index=True)
    rank = models.IntegerField(db_index=True)

    class Meta:
        abstract = True


class Continent(Place):
    pass


class Country(Place):
    continent = models.ForeignKey(Continent, models.CASCADE)


class Region(Place):
    country = models.ForeignKey(Country, models.CASCADE)


class City(Place):
    region = models.ForeignKey(Region, models.CASCADE)


class District(Place):
    city = models.ForeignKey(City, models.CASCADE)


class Street(Place):
    district = models.ForeignKey(District, models.CASCADE)


class Building(Place):
    street = models.ForeignKey(Street, models.CASCADE)


class Apartment(Place):
    building = models.ForeignKey(Building, models.CASCADE)


#: From the root to the leaf: each model and the name of its parent field.
CHAIN: list[tuple[type[Place], str | None]] = [
    (Continent, None),
    (Country, "continent"),
    (Region, "country"),
    (City, "region"),
    (District, "city"),
    (Street, "district"),
    (Building, "street"),
    (Apartment, "building"),
]
