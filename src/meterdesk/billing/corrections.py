"""Operator corrections of the reading stream: releasing or discarding quarantined readings, and
replacing a meter's device (换表). Each runs in one transaction with the re-pricing it causes, and
is audited.

Release rules: a "jump" or "bands disagree" reading is accepted as real and billed; a "decreased"
register is accepted as a reset of the device — a new generation starts at it, so nothing is
billed across it — but only when no later reading continues the old register. Readings that were
quarantined only because of the one just released are checked again and accepted if they now fit.
Conflicting duplicates and readings inconsistent with a later one can only be discarded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, select

from meterdesk.audit import service as audit
from meterdesk.billing.ingest import IncomingReading, Ingestor, IngestReport
from meterdesk.db.database import Database
from meterdesk.db.types import instant_int
from meterdesk.metering import repository as metering_repository
from meterdesk.metering import service as metering
from meterdesk.metering.model import (
    QuarantineReason,
    ReadingSource,
)
from meterdesk.metering.tables import quarantine, readings
from meterdesk.shared.errors import ConflictError, NotFoundError, ValidationError

RELEASABLE = {QuarantineReason.JUMP, QuarantineReason.BANDS_DISAGREE, QuarantineReason.DECREASED}
RECHECK = (
    QuarantineReason.JUMP.value,
    QuarantineReason.DECREASED.value,
    QuarantineReason.INCONSISTENT_WITH_LATER.value,
)


def release(
    db: Database,
    *,
    organisation_id: int,
    quarantine_id: int,
    actor: str,
    ingestor: Ingestor | None = None,
) -> IngestReport:
    at = db.clock()
    pipeline = ingestor or Ingestor(db)
    with db.transaction() as conn:
        item = metering.open_quarantined(
            conn, organisation_id=organisation_id, quarantine_id=quarantine_id
        )
        if item.reason_code not in RELEASABLE:
            raise ConflictError(
                f"a reading quarantined as {item.reason_code.value} cannot be released, only discarded"
            )
        source = ReadingSource.RELEASED
        if item.reason_code is not QuarantineReason.DECREASED:
            _require_fits_later(conn, item)
        if item.reason_code is QuarantineReason.DECREASED:
            _require_nothing_later(conn, item.meter_id, item.measured_at)
            metering.record_replacement(
                conn, meter_id=item.meter_id, at=item.measured_at, new_address="", actor=actor
            )
            source = ReadingSource.REPLACEMENT
        report = pipeline.ingest_in(
            conn,
            [IncomingReading(item.meter_id, item.measured_at, item.total, item.bands, source)],
            at,
        )
        if report.quarantined:  # rolled back: no second item, the first stays open
            raise ConflictError(
                "the reading cannot be billed now: it would be quarantined again (e.g. measured "
                "while the meter belonged to an account closed and settled since); discard it"
            )
        metering.resolve_quarantined(
            conn, quarantine_id=quarantine_id, resolution="released", actor=actor, at=at
        )
        report.merge(_recheck(conn, pipeline, item.meter_id, item.measured_at, actor, at))
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="reading.release",
            subject=f"quarantine:{quarantine_id}",
            at=at,
            detail={
                "meter": item.meter_id,
                "reason": item.reason_code.value,
                "accepted_after_recheck": report.accepted - 1,
            },
        )
    return report


def _require_fits_later(conn: Connection, item: metering.QuarantinedReading) -> None:
    """A released jump must still be followed consistently by the next accepted reading:
    otherwise (a spike between two normal readings) accepting it would bill the spike and then a
    false rollover back down."""
    tails = metering_repository.load_tails(conn, {item.meter_id: item.measured_at})
    later = [r for r in tails.get(item.meter_id, []) if r.measured_at > item.measured_at]
    if not later:
        return
    if later[0].total < item.total:
        raise ConflictError(
            "a later accepted reading is lower than this one: it was a spike; discard it instead"
        )


def _require_nothing_later(conn: Connection, meter_id: int, measured_at: datetime) -> None:
    later = conn.execute(
        select(readings.c.id)
        .where(readings.c.meter_id == meter_id, readings.c.measured_at > instant_int(measured_at))
        .limit(1)
    ).first()
    if later is not None:
        raise ConflictError(
            "later accepted readings continue the old register, so this is not a reset; discard it instead"
        )


def _recheck(
    conn: Connection, pipeline: Ingestor, meter_id: int, after: datetime, actor: str, at: datetime
) -> IngestReport:
    rows = conn.execute(
        select(quarantine.c.id)
        .where(
            quarantine.c.meter_id == meter_id,
            quarantine.c.status == "open",
            quarantine.c.reason_code.in_(RECHECK),
            quarantine.c.measured_at > instant_int(after),
        )
        .order_by(quarantine.c.measured_at)
    ).all()
    organisation_id = metering.meter_organisation(conn, meter_id)
    items = [
        metering.open_quarantined(conn, organisation_id=organisation_id, quarantine_id=row.id)
        for row in rows
    ]
    candidates = [
        IncomingReading(i.meter_id, i.measured_at, i.total, i.bands, i.source) for i in items
    ]
    report = pipeline.ingest_in(conn, candidates, at, quarantine_rejects=False)
    for item in items:
        if (item.meter_id, item.measured_at) in report.accepted_keys:
            metering.resolve_quarantined(
                conn,
                quarantine_id=item.id,
                resolution="released",
                actor=f"{actor} (recheck)",
                at=at,
            )
    return report


def discard(db: Database, *, organisation_id: int, quarantine_id: int, actor: str) -> None:
    at = db.clock()
    with db.transaction() as conn:
        row = conn.execute(
            select(quarantine.c.status).where(
                quarantine.c.id == quarantine_id, quarantine.c.organisation_id == organisation_id
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFoundError(f"quarantined item {quarantine_id} not found")
        if row != "open":
            raise ConflictError(f"quarantined item {quarantine_id} is already {row}")
        metering.resolve_quarantined(
            conn, quarantine_id=quarantine_id, resolution="discarded", actor=actor, at=at
        )
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="reading.discard",
            subject=f"quarantine:{quarantine_id}",
            at=at,
        )


@dataclass(frozen=True)
class Replacement:
    meter_id: int
    at: datetime
    old_final_total: Decimal
    new_initial_total: Decimal
    new_address: str = ""
    old_final_bands: Mapping[str, Decimal] | None = None
    new_initial_bands: Mapping[str, Decimal] | None = None


def replace_meter(
    db: Database,
    *,
    organisation_id: int,
    replacement: Replacement,
    actor: str,
    ingestor: Ingestor | None = None,
) -> int:
    """Bill the old device up to its final reading, then start the new device from its initial
    reading. Returns the new generation number."""
    pipeline = ingestor or Ingestor(db)
    r = replacement
    with db.transaction() as conn:
        if metering.meter_organisation(conn, r.meter_id) != organisation_id:
            raise NotFoundError(f"meter {r.meter_id} not found")
        final = pipeline.ingest_in(
            conn,
            [
                IncomingReading(
                    r.meter_id,
                    r.at,
                    r.old_final_total,
                    r.old_final_bands,
                    ReadingSource.REPLACEMENT,
                )
            ],
            r.at,
        )
        if final.quarantined:
            raise ValidationError("the old meter's final reading does not fit its earlier readings")
        _require_nothing_later(conn, r.meter_id, r.at)
        generation = metering.record_replacement(
            conn, meter_id=r.meter_id, at=r.at, new_address=r.new_address, actor=actor
        )
        pipeline.ingest_in(
            conn,
            [
                IncomingReading(
                    r.meter_id,
                    r.at,
                    r.new_initial_total,
                    r.new_initial_bands,
                    ReadingSource.REPLACEMENT,
                )
            ],
            r.at,
        )
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="meter.replace",
            subject=f"meter:{r.meter_id}",
            at=r.at,
            detail={
                "final": str(r.old_final_total),
                "initial": str(r.new_initial_total),
                "generation": generation,
            },
        )
    return generation
