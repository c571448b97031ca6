"""Persistence for meters, readings, cursors and quarantine, shaped for batch ingest: every
function takes or returns whole batches, and the hot ones read raw stored values (integers)
and write with compiled-once ``executemany`` (see :mod:`meterdesk.db.bulk`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from meterdesk.db.bulk import bulk_insert, bulk_update, raw_rows
from meterdesk.db.types import instant_int, int_instant, scaled_int
from meterdesk.metering.model import (
    BANDS,
    MeterProfile,
    QuarantineReason,
    Reading,
    ReadingSource,
    Utility,
)
from meterdesk.metering.tables import REGISTER_PLACES, meter_cursors, quarantine, readings

BAND_COLUMNS = tuple(f"register_{band}" for band in BANDS)
# What a meter sent, as stored (the bench's bulk-insert baseline writes these alone).
RAW_READING_COLUMNS = (
    "meter_id",
    "generation",
    "measured_at",
    "received_at",
    "register_total",
    *BAND_COLUMNS,
    "source",
)
# The priced line of the interval a reading ends, when it is stored on it (billing.lines).
READING_LINE_COLUMNS = (
    "line_account_id",
    "line_start",
    "line_band",
    "line_tier_block",
    "line_tier_key",
    "line_period_key",
    "line_quantity",
    "line_unit_price",
    "line_cost",
    "line_version_from",
    "line_active",
)
NO_LINE = (None,) * len(READING_LINE_COLUMNS)
READING_COLUMNS = (*RAW_READING_COLUMNS, *READING_LINE_COLUMNS)
CURSOR_COLUMNS = ("meter_id", "generation", "measured_at", "register_total", *BAND_COLUMNS)
_REGISTERS_SQL = "generation, measured_at, register_total, " + ", ".join(BAND_COLUMNS)


def _register(value: int) -> Decimal:
    return Decimal(value).scaleb(-REGISTER_PLACES)


def load_profiles(conn: Connection, meter_ids: Iterable[int]) -> dict[int, MeterProfile]:
    ids = sorted(set(meter_ids))
    if not ids:
        return {}
    rows = raw_rows(
        conn,
        "SELECT id, organisation_id, site_id, utility, ct_ratio, pt_ratio, register_modulus, max_rate_per_hour, "
        "has_band_registers, generation FROM meters WHERE id IN :ids",
        ids=ids,
    )
    return {
        row[0]: MeterProfile(
            meter_id=row[0],
            organisation_id=row[1],
            site_id=row[2],
            utility=Utility(row[3]),
            ct_ratio=Decimal(row[4]).scaleb(-2),
            pt_ratio=Decimal(row[5]).scaleb(-2),
            modulus=_register(row[6]),
            max_rate_per_hour=_register(row[7]),
            has_band_registers=bool(row[8]),
            generation=row[9],
        )
        for row in rows
    }


def load_replacements(
    conn: Connection, meter_ids: Iterable[int]
) -> dict[int, list[tuple[datetime, int]]]:
    """For each meter, (replaced_at, generation_after) in time order."""
    ids = sorted(set(meter_ids))
    result: dict[int, list[tuple[datetime, int]]] = {}
    if ids:
        sql = (
            "SELECT meter_id, replaced_at, generation_after FROM meter_replacements "
            "WHERE meter_id IN :ids ORDER BY replaced_at"
        )
        for meter_id, replaced_at, generation in raw_rows(conn, sql, ids=ids):
            result.setdefault(meter_id, []).append((int_instant(replaced_at), generation))
    return result


def _reading(
    meter_id: int, row: Sequence[Any], source: ReadingSource = ReadingSource.REALTIME
) -> Reading:
    """Row layout: generation, measured_at, register_total, five band registers (stored ints)."""
    bands = row[3:8]
    return Reading(
        meter_id=meter_id,
        generation=int(row[0]),
        measured_at=int_instant(int(row[1])),
        total=_register(int(row[2])),
        bands=tuple(_register(int(b)) for b in bands) if None not in bands else None,
        source=source,
    )


def load_cursors(conn: Connection, meter_ids: Iterable[int]) -> dict[int, Reading]:
    """Each meter's last accepted reading; on PostgreSQL the cursor rows stay locked until the
    batch commits, so two ingest processes never place readings of one meter at once."""
    return {m: cursor_reading(m, row) for m, row in load_cursor_rows(conn, meter_ids).items()}


def load_cursor_rows(conn: Connection, meter_ids: Iterable[int]) -> dict[int, tuple[Any, ...]]:
    """:func:`load_cursors` as stored integers (generation, measured_at, register_total and the
    five band registers), for the ingest lane that works in integers; same lock."""
    ids = sorted(set(meter_ids))
    if not ids:
        return {}
    lock = " ORDER BY meter_id FOR UPDATE" if conn.dialect.name == "postgresql" else ""
    rows = raw_rows(
        conn,
        f"SELECT meter_id, {_REGISTERS_SQL} FROM meter_cursors WHERE meter_id IN :ids{lock}",  # noqa: S608 - constants only
        ids=ids,
    )
    return {row[0]: tuple(row[1:]) for row in rows}


def cursor_reading(meter_id: int, row: Sequence[Any]) -> Reading:
    """A row of :func:`load_cursor_rows` as a :class:`Reading`."""
    return _reading(meter_id, row)


def load_tails(conn: Connection, since: dict[int, datetime]) -> dict[int, list[Reading]]:
    """For each meter, its accepted readings from the last one before ``since[meter]`` to the
    end, in order — one query for the whole batch."""
    if not since:
        return {}
    params: dict[str, int] = {}
    values = []
    for i, (meter_id, bound) in enumerate(sorted(since.items())):
        params[f"m{i}"], params[f"b{i}"] = meter_id, instant_int(bound)
        values.append(f"(:m{i}, :b{i})")
    # Only column names and numbered placeholders are formatted in; values are bound.
    sql = (
        f"WITH bounds(meter_id, bound) AS (VALUES {', '.join(values)}), "  # noqa: S608
        "starts AS (SELECT b.meter_id, COALESCE((SELECT MAX(p.measured_at) FROM readings p "
        "WHERE p.meter_id = b.meter_id AND p.measured_at < b.bound), b.bound) AS start FROM bounds b) "
        f"SELECT r.meter_id, {', '.join('r.' + c for c in _REGISTERS_SQL.split(', '))}, r.source FROM readings r "
        "JOIN starts s ON r.meter_id = s.meter_id AND r.measured_at >= s.start "
        "ORDER BY r.meter_id, r.measured_at, r.generation"
    )
    tails: dict[int, list[Reading]] = {m: [] for m in since}
    for row in raw_rows(conn, sql, **params):
        tails[row[0]].append(_reading(row[0], row[1:9], ReadingSource(row[9])))
    return tails


def _raw_registers(reading: Reading) -> list[int | None]:
    bands: list[int | None] = (
        [scaled_int(value, REGISTER_PLACES) for value in reading.bands]
        if reading.bands
        else [None] * len(BANDS)
    )
    return [scaled_int(reading.total, REGISTER_PLACES), *bands]


def insert_readings(conn: Connection, accepted: Sequence[Reading], received_at: datetime) -> None:
    insert_reading_rows(conn, reading_rows(accepted, instant_int(received_at)))


def reading_rows(accepted: Sequence[Reading], received: int) -> list[tuple[Any, ...]]:
    """The stored rows (in READING_COLUMNS order) of accepted readings received at ``received``
    (stored form)."""
    return [
        (
            r.meter_id,
            r.generation,
            instant_int(r.measured_at),
            received,
            *_raw_registers(r),
            str(r.source),
            *NO_LINE,  # the general path prices into charge_lines
        )
        for r in accepted
    ]


def insert_reading_rows(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    bulk_insert(conn, readings, READING_COLUMNS, rows)


def save_cursors(
    conn: Connection, latest: dict[int, Reading], stored: Mapping[int, Sequence[Any]]
) -> None:
    """Move each meter's cursor to its latest accepted reading (insert for new meters)."""
    save_cursor_rows(conn, [cursor_row(reading) for reading in latest.values()], stored)


def save_cursor_rows(
    conn: Connection, rows: Sequence[tuple[Any, ...]], stored: Mapping[int, Sequence[Any]]
) -> None:
    """:func:`save_cursors` for stored rows (in CURSOR_COLUMNS order); ``stored``: the meters'
    cursors as they are (:func:`load_cursor_rows`). A cursor whose band registers stay as they
    are (none, on a meter without them) is updated without them: the same row, five bound
    NULLs fewer (each one goes through pysqlite's adapter lookup, db.engine)."""
    new, registers_only, whole = [], [], []
    for row in rows:
        before = stored.get(row[0])
        if before is None:
            new.append(row)
        elif tuple(before[3:]) == row[4:]:
            registers_only.append((row[1], row[2], row[3], row[0]))
        else:
            whole.append((*row[1:], row[0]))
    bulk_insert(conn, meter_cursors, CURSOR_COLUMNS, new)
    keys = ("meter_id",)
    bulk_update(conn, meter_cursors, keys, CURSOR_COLUMNS[1:4], registers_only)
    bulk_update(conn, meter_cursors, keys, CURSOR_COLUMNS[1:], whole)


def cursor_row(reading: Reading) -> tuple[object, ...]:
    return (
        reading.meter_id,
        reading.generation,
        instant_int(reading.measured_at),
        *_raw_registers(reading),
    )


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
    when = item.measured_at.isoformat() if item.measured_at else None
    body = json.dumps(
        [item.meter_id, item.source_ref, when, item.payload, item.reason_code.value],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def quarantine_items(
    conn: Connection, items: Sequence[QuarantineItem], received_at: datetime
) -> None:
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
