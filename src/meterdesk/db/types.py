"""Column types that keep money, quantities and instants exact on SQLite and PostgreSQL alike.

Why not ``Numeric`` and ``DateTime``: SQLite has no decimal type (SQLAlchemy would go through
float) and stores datetimes as text without a zone. So:

- :class:`Scaled` stores a Decimal with a fixed number of places as a BIGINT (value × 10^places)
  and refuses a value with more places instead of rounding it. Sums in SQL stay exact.
- :class:`ExactDecimal` stores an arbitrary-precision Decimal as text, for exact running costs
  that are never summed in SQL.
- :class:`Instant` stores an aware UTC instant as BIGINT microseconds since the epoch: exact,
  sortable, zone-free, and cheap to bulk-insert.

The hot ingest path writes the underlying integers directly (see ``scaled_int`` and
``instant_int``) so bulk inserts skip per-value type processing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Dialect, String
from sqlalchemy.types import TypeDecorator

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def scaled_int(value: Decimal, places: int) -> int:
    scaled = value.scaleb(places)
    try:
        integral = int(scaled)  # truncates; the exact comparison below refuses a lost fraction
    except OverflowError:  # infinity
        raise ValueError(f"{value} is not a finite number") from None
    if integral != scaled:
        raise ValueError(f"{value} has more than {places} decimal places")
    return integral


def instant_int(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: instants must carry a time zone")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_MICROSECOND = timedelta(microseconds=1)


def int_instant(value: int) -> datetime:
    # timedelta * int is exact and ~3,000 instructions cheaper than timedelta(microseconds=…),
    # whose keyword parsing and float-ready normalising ran once per lane meter and cursor read
    return _EPOCH + _MICROSECOND * value


class Scaled(TypeDecorator[Decimal]):
    impl = BigInteger
    cache_ok = True

    def __init__(self, places: int) -> None:
        super().__init__()
        self.places = places

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, int):
            return int(value * 10**self.places)
        return scaled_int(Decimal(value), self.places)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(int(value)).scaleb(-self.places)


class ExactDecimal(TypeDecorator[Decimal]):
    impl = String(80)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else f"{Decimal(value):f}"

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class Instant(TypeDecorator[datetime]):
    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, int):
            return value
        return instant_int(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else int_instant(int(value))
