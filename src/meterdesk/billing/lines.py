"""Priced lines, wherever they are stored.

The interval between two readings of a meter is priced as one or more lines (band, tier block,
quantity, unit price, cost). Most intervals are one line, and billing's fast lane stores that
line on the reading row that ends the interval (``readings.line_*``): no row and no index entry
of its own, which were a sixth of the rows and a scattered index page per meter that every
reading wrote (docs/decisions/0004-p1-floor.md, "Sitting 12"). Intervals of several lines,
intervals priced again after a late reading split them, and everything the general charger
prices are rows of ``charge_lines``.

Readers never read either alone: :func:`select_lines` reads both, the same filter applied to
each, as rows with ``charge_lines``' column names. On a reading, the line's segment is its
whole interval, from ``line_start`` to the reading's time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, CompoundSelect, select, union_all

from meterdesk.billing.repository import LINE_COLUMNS
from meterdesk.billing.tables import charge_lines
from meterdesk.metering.tables import readings

LineView = Mapping[str, ColumnElement[Any]]

IN_CHARGE_LINES: LineView = {name: charge_lines.c[name] for name in LINE_COLUMNS}
ON_READINGS: LineView = {
    "meter_id": readings.c.meter_id,
    "account_id": readings.c.line_account_id,
    "interval_start": readings.c.line_start,
    "interval_end": readings.c.measured_at,
    "segment_start": readings.c.line_start,
    "segment_end": readings.c.measured_at,
    "band": readings.c.line_band,
    "tier_block": readings.c.line_tier_block,
    "tier_key": readings.c.line_tier_key,
    "period_key": readings.c.line_period_key,
    "quantity": readings.c.line_quantity,
    "unit_price": readings.c.line_unit_price,
    "cost": readings.c.line_cost,
    "version_from": readings.c.line_version_from,
    "active": readings.c.line_active,
}


def select_lines(
    fields: Sequence[str], where: Callable[[LineView], Iterable[ColumnElement[bool]]]
) -> CompoundSelect[*tuple[Any, ...]]:
    """``fields`` of the lines ``where`` chooses, from both stores (``UNION ALL``). ``where``
    gets a view of column names to columns and is applied to each store, so each is read
    through its own index (``charge_lines`` by meter and interval end; ``readings`` by meter
    and time). Order the result by field names."""
    in_table = select(*(IN_CHARGE_LINES[f].label(f) for f in fields)).where(*where(IN_CHARGE_LINES))
    on_readings = select(*(ON_READINGS[f].label(f) for f in fields)).where(
        readings.c.line_active.is_not(None), *where(ON_READINGS)
    )
    return union_all(in_table, on_readings)
