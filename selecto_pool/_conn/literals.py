"""Numbers sent typed as SQL literals are, not as psycopg's smallest fit.

psycopg sends an ``int`` as the smallest type that holds it (``int2`` for
30000) and a ``float`` as ``float8``; the server then types ``%s + %s`` from
the parameters, so ``30000 + 30000`` overflows ``smallint``. Inlined by
Django's stock cursor, ``30000`` is an ``integer`` literal and ``1.5`` a
``numeric`` one. These dumpers give server-side parameters the literals'
types, with psycopg's public adapter API only.
"""

from __future__ import annotations

from typing import Any, cast

import psycopg
from psycopg import pq
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Dumper, PyFormat
from psycopg.types.numeric import FloatDumper, Int4, Int8, IntNumeric

_INT4 = range(-(2**31), 2**31)
_INT8 = range(-(2**63), 2**63)
_OIDS = {name: psycopg.postgres.types[name].oid for name in ("int4", "int8", "numeric")}


class LiteralIntDumper(Dumper):
    """Types an ``int`` like a literal: int4, else int8, else numeric (never int2).

    A dispatcher, as psycopg's own ``IntDumper``: it picks, per value, the
    dumper the connection has for int4, int8 or numeric, which is
    psycopg-binary's C dumper when it is installed.
    """

    format = pq.Format.TEXT

    def __init__(self, cls: type, context: AdaptContext | None = None):
        super().__init__(cls, context)
        adapters = context.adapters if context is not None else psycopg.adapters
        self._int4, self._int8, self._numeric = (
            cast(
                Dumper,
                adapters.get_dumper_by_oid(_OIDS[name], self.format)(key, context),
            )
            for name, key in (("int4", Int4), ("int8", Int8), ("numeric", IntNumeric))
        )

    def get_key(self, obj: int, format: PyFormat) -> type:
        if obj in _INT4:
            return Int4
        return Int8 if obj in _INT8 else IntNumeric

    def upgrade(self, obj: int, format: PyFormat) -> Dumper:
        if obj in _INT4:
            return self._int4
        return self._int8 if obj in _INT8 else self._numeric

    def dump(self, obj: Any) -> Buffer | None:
        # psycopg always upgrades first, since get_key() never returns ``int``.
        return self.upgrade(obj, PyFormat.AUTO).dump(obj)


class LiteralIntBinaryDumper(LiteralIntDumper):
    format = pq.Format.BINARY


class FloatAsNumericDumper(FloatDumper):
    """Floats typed as numeric, as a literal ``1.5`` is (the text is unchanged).

    psycopg has no C dumper writing a float as numeric: this one is Python.
    """

    # numeric is set per instance: with it on the class, register_dumper()
    # would also make this the connection's dumper *by oid* for numeric,
    # the one LiteralIntDumper looks up for ints too big for int8.
    oid = 0

    def __init__(self, cls: type, context: AdaptContext | None = None):
        super().__init__(cls, context)
        self.oid = _OIDS["numeric"]


def register(adapters: psycopg.adapt.AdaptersMap) -> None:
    """Make ``adapters`` (a connection's) send numbers typed like literals."""
    # The binary int dumper last: psycopg's default for ``%s`` too.
    adapters.register_dumper(int, LiteralIntDumper)
    adapters.register_dumper(int, LiteralIntBinaryDumper)
    adapters.register_dumper(float, FloatAsNumericDumper)
