"""Persistence for meters, readings, cursors and quarantine, shaped for batch ingest: every
function takes or returns whole batches so the pipeline makes a handful of queries per batch."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Connection, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from meterdesk.db.bulk import bulk_insert
from meterdesk.db.types import instant_int, scaled_int
from meterdesk.metering.model import BANDS, MeterProfile, QuarantineReason, Reading, ReadingSource, Utility
from meterdesk.metering.tables import REGISTER_PLACES, meter_cursors, meter_replacements, meters, quarantine, readings

BAND_COLUMNS = tuple(f"register_{band}" for band in BANDS)
READING_COLUMNS = ("meter_id", "generation", "measured_at", "received_at", "register_total", *BAND_COLUMNS, "source")
CURSOR_COLUMNS = ("meter_id", "generation", "measured_at", "register_total", *BAND_COLUMNS)


def load_profiles(conn: Connection, meter_ids: Iterable[int]) -> dict[int, MeterProfile]:
    ids = sorted(set(meter_ids))
    if not ids:
        return {}
    rows = conn.execute(select(meters).where(meters.c.id.in_(ids))).mappings().all()
    return {
        row["id"]: MeterProfile(
            meter_id=row["id"],
            organisation_id=row["organisation_id"],
            site_id=row["site_id"],
            utility=Utility(row["utility"]),
            ct_ratio=row["ct_ratio"],
            pt_ratio=row["pt_ratio"],
            modulus=row["register_modulus"],
            max_rate_per_hour=row["max_rate_per_hour"],
            has_band_registers=row["has_band_registers"],
            generation=row["generation"],
        )
        for row in rows
    }


def load_replacements(conn: Connection, meter_ids: Iterable[int]) -> dict[int, list[tuple[datetime, int]]]:
    """For each meter, (replaced_at, generation_after) in time order."""
    ids = sorted(set(meter_ids))
    result: dict[int, list[tuple[datetime, int]]] = {}
    if not ids:
        return result
    query = (
        select(meter_replacements.c.meter_id, meter_replacements.c.replaced_at, meter_replacements.c.generation_after)
        .where(meter_replacements.c.meter_id.in_(ids))
        .order_by(meter_replacements.c.replaced_at)
    )
    for row in conn.execute(query):
        result.setdefault(row.meter_id, []).append((row.replaced_at, row.generation_after))
    return result


def load_cursors(conn: Connection, meter_ids: Iterable[int]) -> dict[int, Reading]:
    ids = sorted(set(meter_ids))
    if not ids:
        return {}
    table = meter_cursors
    query = select(
        table.c.meter_id,
        table.c.generation,
        table.c.measured_at,
        table.c.register_total,
        *(table.c[c] for c in BAND_COLUMNS),
    ).where(table.c.meter_id.in_(ids))
    return {row[0]: _reading_from_raw(row[0], row[1:]) for row in conn.execute(query).all()}


def _reading_from_raw(meter_id: int, row: Sequence[object]) -> Reading:
    # Values come back through the Scaled/Instant types already converted.
    generation, measured_at, total = row[0], row[1], row[2]
    band_values = row[3:8]
    bands = tuple(band_values) if all(value is not None for value in band_values) else None
    assert isinstance(measured_at, datetime) and isinstance(total, Decimal)
    return Reading(
        meter_id=meter_id,
        generation=int(str(generation)),
        measured_at=measured_at,
        total=total,
        bands=bands,  # type: ignore[arg-type]
        source=ReadingSource(str(row[8])) if len(row) > 8 else ReadingSource.REALTIME,
    )


def load_tail(conn: Connection, meter_id: int, since: datetime) -> list[Reading]:
    """Accepted readings of one meter from the last one before ``since`` to the end, in order."""
    previous = conn.execute(
        select(readings.c.measured_at)
        .where(readings.c.meter_id == meter_id, readings.c.measured_at < instant_int(since))
        .order_by(readings.c.measured_at.desc())
        .limit(1)
    ).scalar_one_or_none()
    start = previous if previous is not None else since
    query = (
        select(
            readings.c.generation,
            readings.c.measured_at,
            readings.c.register_total,
            *(readings.c[c] for c in BAND_COLUMNS),
            readings.c.source,
        )
        .where(readings.c.meter_id == meter_id, readings.c.measured_at >= instant_int(start))
        .order_by(readings.c.measured_at, readings.c.generation)
    )
    return [_reading_from_raw(meter_id, row) for row in conn.execute(query).all()]


def _raw_registers(reading: Reading) -> list[int | None]:
    bands: list[int | None] = (
        [scaled_int(value, REGISTER_PLACES) for value in reading.bands] if reading.bands else [None] * len(BANDS)
    )
    return [scaled_int(reading.total, REGISTER_PLACES), *bands]


def insert_readings(conn: Connection, accepted: Sequence[Reading], received_at: datetime) -> None:
    received = instant_int(received_at)
    rows = [
        (r.meter_id, r.generation, instant_int(r.measured_at), received, *_raw_registers(r), r.source.value)
        for r in accepted
    ]
    bulk_insert(conn, readings, READING_COLUMNS, rows)


def save_cursors(conn: Connection, latest: dict[int, Reading], existing: Iterable[int]) -> None:
    """Move each meter's cursor to its latest accepted reading (insert for new meters)."""
    known = set(existing)
    new_rows = [_cursor_row(r) for meter_id, r in latest.items() if meter_id not in known]
    bulk_insert(conn, meter_cursors, CURSOR_COLUMNS, new_rows)
    changed = [dict(zip(CURSOR_COLUMNS, _cursor_row(r), strict=True)) for m, r in latest.items() if m in known]
    if changed:
        for item in changed:
            item["target"] = item.pop("meter_id")
        conn.execute(
            update(meter_cursors)
            .where(meter_cursors.c.meter_id == bindparam("target"))
            .values({name: bindparam(name, type_=BigInteger()) for name in CURSOR_COLUMNS if name != "meter_id"}),
            changed,
        )


def _cursor_row(reading: Reading) -> tuple[object, ...]:
    return (reading.meter_id, reading.generation, instant_int(reading.measured_at), *_raw_registers(reading))


@dataclass(frozen=True)
class QuarantineItem:
    organisation_id: int | None
    meter_id: int | None
    source_ref: str
    measured_at: datetime | None
    payload: dict[str, object]
    reason_code: QuarantineReason
    reason: str


def fingerprint(item: QuarantineItem) -> str:
    """Same data, same reason → same fingerprint, so a re-sent bad reading is stored once."""
    body = json.dumps(
        [item.meter_id, item.source_ref, item.measured_at and item.measured_at.isoformat(), item.payload, item.reason_code.value],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def quarantine_items(conn: Connection, items: Sequence[QuarantineItem], received_at: datetime) -> None:
    if not items:
        return
    rows = [
        {
            "organisation_id": item.organisation_id,
            "meter_id": item.meter_id,
            "source_ref": item.source_ref[:200],
            "measured_at": item.measured_at,
            "received_at": received_at,
            "payload": json.dumps(item.payload, sort_keys=True, default=str, ensure_ascii=False),
            "reason_code": item.reason_code.value,
            "reason": item.reason,
            "status": "open",
            "fingerprint": fingerprint(item),
        }
        for item in items
    ]
    builder = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(builder(quarantine).on_conflict_do_nothing(index_elements=["fingerprint"]), rows)
