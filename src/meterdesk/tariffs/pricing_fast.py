"""The common case of pricing in one step: a reading window inside one segment and one tier block.

Almost every interval between two consecutive readings (minutes to an hour apart) lies inside
one time-of-use period of one local day, under one tariff version, and adds to a tier total
without crossing a block bound. Then :func:`pricing.price_usage` would produce exactly one line:
the whole quantity at one unit price. :func:`price_single_line` recognises that case with the same
cached day plans and gives the same line (same quantity object, same price, same exact cost, by
the same ``EXACT`` arithmetic) without building segments, pieces and ladders; for anything else
— register-billed (band) usage, a window crossing a period, day, month or version start, a
quantity crossing a tier bound, a quantity with more than six places, a non-UTC instant — it
returns ``None`` and the caller runs the full pricer, which also owns every error message.

A companion of :mod:`meterdesk.tariffs.pricing` (it shares that module's caches and helpers, so
the two can never disagree about a day plan or a price).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import NamedTuple
from zoneinfo import ZoneInfo

from meterdesk.shared.money import EXACT, QUANTITY_PLACES
from meterdesk.tariffs.model import Band, Tariff, TierMode
from meterdesk.tariffs.pricing import (
    ZERO,
    _band_price,
    _block_index,
    _day_plan,
    _version_starts,
)


class SingleLine(NamedTuple):
    """The one line :func:`pricing.price_usage` would give for the window (its start and end
    are the window's own)."""

    band: Band
    quantity: Decimal
    unit_price: Decimal
    cost: Decimal  # quantity * unit_price, exact
    tier_block: int | None
    tier_key: str | None
    period_key: str
    version_from: date


def price_single_line(
    start: datetime,
    end: datetime,
    quantity: Decimal,
    tariff: Tariff,
    tz: ZoneInfo,
    tier_used: Mapping[str, Decimal],
) -> SingleLine | None:
    """Price ``quantity`` (total-register usage, > 0) over ``[start, end)`` as one line, or
    return ``None`` when the window or the quantity needs the full pricer."""
    if start.tzinfo is not UTC or end.tzinfo is not UTC or not start < end:
        return None
    if not _at_most_six_places(quantity) or quantity <= 0:
        return None
    starts = _version_starts(tariff, tz)
    index = bisect_right(starts, start) - 1
    if index < 0 or (index + 1 < len(starts) and end > starts[index + 1]):
        return None  # before the first version (an error) or across a version start
    version = tariff.versions[index]
    plan = _day_plan(version, start.astimezone(tz).date(), tz)
    if start >= plan.end:
        return None  # a local day whose midnight repeats: the full walk handles it
    period = bisect_right(plan.starts, start) - 1
    cut = plan.starts[period + 1] if period + 1 < len(plan.starts) else plan.end
    if end > cut:
        return None  # crosses a period, day or month start
    band = plan.bands[period]
    tiers = version.tiers
    if tiers is None:
        price = _band_price(version, band, band)
        return SingleLine(
            band,
            quantity,
            price,
            EXACT.multiply(quantity, price),
            None,
            plan.tier_key,
            plan.period_key,
            version.effective_from,
        )
    key = plan.tier_key
    assert key is not None  # a version with tiers always gives a tier key
    used = tier_used.get(key, ZERO)
    block_index = _block_index(tiers, used)
    block = tiers.blocks[block_index]
    if block.up_to is not None and EXACT.add(used, quantity) > block.up_to:
        return None  # climbs into the next block: several lines
    base = ZERO if tiers.mode is TierMode.PRICE else _band_price(version, band, band)
    price = EXACT.add(base, block.price)
    return SingleLine(
        band,
        quantity,
        price,
        EXACT.multiply(quantity, price),
        block_index,
        key,
        plan.period_key,
        version.effective_from,
    )


def _at_most_six_places(quantity: Decimal) -> bool:
    """The pricer's own limit (``shared.money.parse_quantity``): at most six places once
    trailing zeros are dropped — checked without normalising, which costs more."""
    if not quantity.is_finite():
        return False
    scaled = quantity.scaleb(QUANTITY_PLACES)
    return scaled == scaled.to_integral_value()
