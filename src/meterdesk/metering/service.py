"""Meter use cases: register a meter, replace its device, and work the quarantine.

Releasing a quarantined reading is an operator's decision and is audited: a "jump" is accepted
as real consumption and billed; a "decreased" register is accepted as a reset of the device (it
starts a new generation, so nothing is billed across it); discarding keeps the record but never
bills it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from meterdesk.audit import service as audit
from meterdesk.db import counters
from meterdesk.db.database import Database
from meterdesk.metering.model import MeterKind, Protocol, QuarantineReason, ReadingSource, Utility
from meterdesk.metering.tables import meter_replacements, meters, quarantine, readings
from meterdesk.shared.errors import ConflictError, NotFoundError, ValidationError
from meterdesk.shared.money import to_decimal
from meterdesk.sites.tables import rooms, sites

DEFAULT_MAX_RATE = {Utility.ELECTRICITY: Decimal(500), Utility.WATER: Decimal(30)}
DEFAULT_MODULUS = Decimal(1_000_000)


@dataclass(frozen=True)
class MeterSpec:
    number: str
    utility: str
    kind: str
    protocol: str = "manual"
    address: str = ""
    room_id: int | None = None
    site_id: int | None = None
    ct_ratio: object = 1
    pt_ratio: object = 1
    register_modulus: object = DEFAULT_MODULUS
    has_band_registers: bool = False
    max_rate_per_hour: object = None
    installed_on: date | None = None


def _enum(kind: Any, value: str, field: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise ValidationError(
            f"{field}: {value!r} is not one of {', '.join(k.value for k in kind)}"
        ) from None


def _positive(value: object, field: str, places: int) -> Decimal:
    number = to_decimal(value, field=field)
    if number <= 0 or number != number.quantize(Decimal(1).scaleb(-places)):
        raise ValidationError(f"{field}: a positive number with at most {places} decimal places")
    return number


NUMBER_LENGTH = 64  # metering/tables.py
ADDRESS_LENGTH = 40


def create_meter(db: Database, *, organisation_id: int, spec: MeterSpec, actor: str) -> int:
    utility = _enum(Utility, spec.utility, "utility")
    kind = _enum(MeterKind, spec.kind, "kind")
    protocol = _enum(Protocol, spec.protocol, "protocol")
    if (kind is MeterKind.WATER) != (utility is Utility.WATER):
        raise ValidationError(
            "kind: a water meter measures water and an electricity meter electricity"
        )
    max_rate = (
        spec.max_rate_per_hour if spec.max_rate_per_hour is not None else DEFAULT_MAX_RATE[utility]
    )
    values = {
        "organisation_id": organisation_id,
        "number": spec.number.strip(),
        "utility": utility.value,
        "kind": kind.value,
        "protocol": protocol.value,
        "address": spec.address.strip() or spec.number.strip(),
        "ct_ratio": _positive(spec.ct_ratio, "ct_ratio", 2),
        "pt_ratio": _positive(spec.pt_ratio, "pt_ratio", 2),
        "register_modulus": _positive(spec.register_modulus, "register_modulus", 4),
        "has_band_registers": spec.has_band_registers,
        "max_rate_per_hour": _positive(max_rate, "max_rate_per_hour", 4),
        "installed_on": spec.installed_on,
        "generation": 0,
    }
    if not values["number"]:
        raise ValidationError("number: must not be empty")
    # The columns' lengths. Without an address the number stands in for it, and a number of
    # 41-64 characters (the API allows 64) was a 500 on PostgreSQL, stored on SQLite.
    if len(values["number"]) > NUMBER_LENGTH:
        raise ValidationError(f"number: at most {NUMBER_LENGTH} characters")
    if len(values["address"]) > ADDRESS_LENGTH:
        raise ValidationError(
            f"address: at most {ADDRESS_LENGTH} characters (without an address the number "
            "is used: give the meter's address)"
        )
    now = db.clock()
    with db.transaction() as conn:
        values["site_id"], values["room_id"] = _placement(conn, organisation_id, spec)
        try:
            result = conn.execute(insert(meters).values(created_at=now, **values))
        except IntegrityError:
            raise ConflictError(f"meter {spec.number!r} already exists") from None
        key = result.inserted_primary_key
        assert key is not None
        counters.bump(conn)
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="meter.create",
            subject=f"meter:{key[0]}",
            at=now,
            detail={"number": values["number"]},
        )
        return int(key[0])


def _placement(conn: Connection, organisation_id: int, spec: MeterSpec) -> tuple[int, int | None]:
    if spec.room_id is not None:
        row = conn.execute(
            select(sites.c.id)
            .select_from(
                rooms.join(sites.metadata.tables["floors"])
                .join(sites.metadata.tables["buildings"])
                .join(sites)
            )
            .where(rooms.c.id == spec.room_id, rooms.c.organisation_id == organisation_id)
        ).scalar_one_or_none()
        if row is None:
            raise NotFoundError(f"room {spec.room_id} not found")
        return int(row), spec.room_id
    if spec.site_id is None:
        raise ValidationError("a meter needs a room or a site")
    found = conn.execute(
        select(sites.c.id).where(
            sites.c.id == spec.site_id, sites.c.organisation_id == organisation_id
        )
    ).scalar_one_or_none()
    if found is None:
        raise NotFoundError(f"site {spec.site_id} not found")
    return int(found), None


def find_meter(conn: Connection, *, organisation_id: int, number: str) -> int:
    found = conn.execute(
        select(meters.c.id).where(
            meters.c.organisation_id == organisation_id, meters.c.number == number
        )
    ).scalar_one_or_none()
    if found is None:
        raise NotFoundError(f"meter {number!r} not found")
    return int(found)


def meter_organisation(conn: Connection, meter_id: int) -> int:
    found = conn.execute(
        select(meters.c.organisation_id).where(meters.c.id == meter_id)
    ).scalar_one_or_none()
    if found is None:
        raise NotFoundError(f"meter {meter_id} not found")
    return int(found)


def record_replacement(
    conn: Connection, *, meter_id: int, at: datetime, new_address: str, actor: str
) -> int:
    """Start a new device generation at ``at`` (the caller stores the old device's final reading
    before and the new device's initial reading after, in the same transaction)."""
    row = conn.execute(
        select(meters.c.generation, meters.c.address).where(meters.c.id == meter_id)
    ).one()
    generation = row.generation + 1
    counters.bump(conn)
    conn.execute(
        insert(meter_replacements).values(
            meter_id=meter_id,
            replaced_at=at,
            generation_after=generation,
            old_address=row.address,
            new_address=new_address or row.address,
            actor=actor,
        )
    )
    conn.execute(
        update(meters)
        .where(meters.c.id == meter_id)
        .values(generation=generation, address=new_address or row.address)
    )
    return int(generation)


def list_quarantine(
    db: Database, *, organisation_id: int, status: str = "open", limit: int = 200
) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = (
            conn.execute(
                select(quarantine, meters.c.number.label("meter_number"))
                .outerjoin(meters, meters.c.id == quarantine.c.meter_id)
                .where(
                    quarantine.c.organisation_id == organisation_id, quarantine.c.status == status
                )
                .order_by(quarantine.c.id)
                .limit(limit)
            )
            .mappings()
            .all()
        )
    return [dict(row) for row in rows]


@dataclass(frozen=True)
class QuarantinedReading:
    id: int
    organisation_id: int
    meter_id: int
    measured_at: datetime
    reason_code: QuarantineReason
    total: Decimal
    bands: dict[str, Decimal] | None
    source: ReadingSource


def open_quarantined(
    conn: Connection, *, organisation_id: int, quarantine_id: int
) -> QuarantinedReading:
    row = (
        conn.execute(
            select(quarantine).where(
                quarantine.c.id == quarantine_id, quarantine.c.organisation_id == organisation_id
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFoundError(f"quarantined reading {quarantine_id} not found")
    if row["status"] != "open":
        raise ConflictError(f"quarantined reading {quarantine_id} is already {row['status']}")
    if row["meter_id"] is None or row["measured_at"] is None:
        raise ConflictError("this item is not a reading of a known meter; it can only be discarded")
    payload = json.loads(row["payload"])
    bands = payload.get("bands")
    names = ("sharp", "peak", "flat", "valley", "deep_valley")
    return QuarantinedReading(
        id=row["id"],
        organisation_id=organisation_id,
        meter_id=row["meter_id"],
        measured_at=row["measured_at"],
        reason_code=QuarantineReason(row["reason_code"]),
        total=Decimal(payload["total"]),
        bands={n: Decimal(v) for n, v in zip(names, bands, strict=True)} if bands else None,
        source=ReadingSource(payload.get("source", "realtime")),
    )


def resolve_quarantined(
    conn: Connection, *, quarantine_id: int, resolution: str, actor: str, at: datetime
) -> None:
    conn.execute(
        update(quarantine)
        .where(quarantine.c.id == quarantine_id)
        .values(status=resolution, resolution=resolution, resolved_by=actor, resolved_at=at)
    )


def reading_exists(conn: Connection, *, meter_id: int, measured_at: datetime) -> bool:
    return (
        conn.execute(
            select(readings.c.id)
            .where(readings.c.meter_id == meter_id, readings.c.measured_at == measured_at)
            .limit(1)
        ).first()
        is not None
    )
