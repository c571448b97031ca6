"""Meters, their readings and the quarantine, of one organisation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, or_, select

from meterdesk.api.pagination import encode
from meterdesk.api.queries.common import Window, like, page, text
from meterdesk.db.types import instant_int
from meterdesk.metering.model import BANDS
from meterdesk.metering.tables import meters, quarantine, readings
from meterdesk.shared.errors import NotFoundError


@dataclass(frozen=True)
class MeterFilter:
    site_id: int | None = None
    room_id: int | None = None
    utility: str | None = None
    q: str | None = None


def list_meters(
    conn: Connection, organisation_id: int, where: MeterFilter, window: Window
) -> tuple[Sequence[RowMapping], str | None]:
    query = select(meters).where(meters.c.organisation_id == organisation_id)
    for value, column in (
        (where.site_id, meters.c.site_id),
        (where.room_id, meters.c.room_id),
        (where.utility, meters.c.utility),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.q:
        query = query.where(meters.c.number.like(like(where.q), escape="\\"))
    return page(conn, query, meters.c.id, after=window.after, limit=window.limit)


def meter_dict(row: RowMapping) -> dict[str, Any]:
    values = dict(row)
    for name in ("ct_ratio", "pt_ratio", "register_modulus", "max_rate_per_hour"):
        values[name] = text(values[name])
    return values


def require_meters(conn: Connection, organisation_id: int, meter_ids: set[int]) -> None:
    """Refuse, as not found, any meter id that is not the organisation's."""
    found = {
        int(m)
        for m in conn.execute(
            select(meters.c.id).where(
                meters.c.organisation_id == organisation_id, meters.c.id.in_(meter_ids)
            )
        ).scalars()
    }
    missing = sorted(meter_ids - found)
    if missing:
        raise NotFoundError(f"meter {', '.join(str(m) for m in missing[:10])} not found")


@dataclass(frozen=True)
class ReadingWindow:
    start: datetime | None
    end: datetime | None
    after: tuple[int, ...] | None  # (measured_at µs, generation)
    limit: int


def list_readings(
    conn: Connection, meter_id: int, where: ReadingWindow
) -> tuple[list[dict[str, Any]], str | None]:
    """Accepted readings of one meter, oldest first; the cursor is (time, generation)."""
    query = select(readings).where(readings.c.meter_id == meter_id)
    if where.start is not None:
        query = query.where(readings.c.measured_at >= instant_int(where.start))
    if where.end is not None:
        query = query.where(readings.c.measured_at < instant_int(where.end))
    if where.after is not None:
        at, generation = where.after
        query = query.where(
            or_(
                readings.c.measured_at > at,
                and_(readings.c.measured_at == at, readings.c.generation > generation),
            )
        )
    ordered = query.order_by(readings.c.measured_at, readings.c.generation).limit(where.limit + 1)
    rows = conn.execute(ordered).mappings().all()
    items = [_reading(row) for row in rows[: where.limit]]
    if len(rows) <= where.limit:
        return items, None
    last = rows[where.limit - 1]
    return items, encode(instant_int(last["measured_at"]), int(last["generation"]))


def _reading(row: RowMapping) -> dict[str, Any]:
    bands = {band: text(row[f"register_{band}"]) for band in BANDS}
    return {
        "meter_id": row["meter_id"],
        "generation": row["generation"],
        "measured_at": row["measured_at"],
        "received_at": row["received_at"],
        "total": text(row["register_total"]),
        "bands": {k: v for k, v in bands.items() if v is not None} or None,
        "source": row["source"],
    }


def list_quarantine(
    conn: Connection, organisation_id: int, status: str, meter_id: int | None, window: Window
) -> tuple[list[dict[str, Any]], str | None]:
    query = (
        select(quarantine, meters.c.number.label("meter_number"))
        .outerjoin(meters, meters.c.id == quarantine.c.meter_id)
        .where(quarantine.c.organisation_id == organisation_id, quarantine.c.status == status)
    )
    if meter_id is not None:
        query = query.where(quarantine.c.meter_id == meter_id)
    rows, cursor = page(conn, query, quarantine.c.id, after=window.after, limit=window.limit)
    return [quarantine_dict(row) for row in rows], cursor


def quarantine_dict(row: RowMapping) -> dict[str, Any]:
    values = dict(row)
    values["total"] = json.loads(row["payload"]).get("total")
    return values


def one_quarantined(conn: Connection, organisation_id: int, quarantine_id: int) -> dict[str, Any]:
    row = (
        conn.execute(
            select(quarantine, meters.c.number.label("meter_number"))
            .outerjoin(meters, meters.c.id == quarantine.c.meter_id)
            .where(
                quarantine.c.id == quarantine_id, quarantine.c.organisation_id == organisation_id
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFoundError(f"quarantined reading {quarantine_id} not found")
    return quarantine_dict(row)
