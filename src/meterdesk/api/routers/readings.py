"""Readings in (a batch from an integration or an operator) and the quarantine of readings that
did not fit: list, release (bill it), discard (keep it, never bill it)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from meterdesk.api.deps import (
    Caller,
    IdempotencyKey,
    OptionalIdempotencyKey,
    QuarantineWriter,
    Reader,
    ReadingsWriter,
)
from meterdesk.api.errors import ERROR_RESPONSES
from meterdesk.api.idempotency import audited, run_once
from meterdesk.api.pagination import Cursor, Limit, Page, after_id
from meterdesk.api.queries import meters as queries
from meterdesk.api.queries.common import Window
from meterdesk.api.schemas.common import Id
from meterdesk.api.schemas.meters import (
    IngestReportOut,
    QuarantineOut,
    QuarantineResolvedOut,
    ReadingsIn,
)
from meterdesk.billing import corrections
from meterdesk.billing.ingest import IncomingReading, IngestReport
from meterdesk.metering.model import ReadingSource
from meterdesk.shared.money import format_money, from_fen, parse_quantity

router = APIRouter(responses=ERROR_RESPONSES, tags=["readings"])
REPLAY: dict[int | str, dict[str, Any]] = {
    200: {"model": QuarantineResolvedOut, "description": "Idempotent replay"}
}


def report_out(report: IngestReport) -> IngestReportOut:
    return IngestReportOut(
        received=report.received,
        accepted=report.accepted,
        duplicates=report.duplicates,
        quarantined=report.quarantined,
        late=report.late,
        intervals_priced=report.intervals_priced,
        transfers=report.transfers,
        deducted=format_money(from_fen(report.deducted_fen)),
        returned=format_money(from_fen(report.returned_fen)),
    )


def _incoming(body: ReadingsIn) -> list[IncomingReading]:
    return [
        IncomingReading(
            meter_id=item.meter_id,
            measured_at=item.measured_at,
            total=parse_quantity(item.total, field="total"),
            bands=None
            if item.bands is None
            else {band: parse_quantity(v, field=band) for band, v in item.bands.items()},
            source=ReadingSource(item.source),
        )
        for item in body.readings
    ]


def _ingest(caller: Caller, body: ReadingsIn) -> IngestReportOut:
    with caller.db.read() as conn:
        queries.require_meters(conn, caller.organisation_id, {r.meter_id for r in body.readings})
    incoming = _incoming(body)
    with caller.ctx.ingest_lock:
        report = caller.ctx.app.ingestor.ingest(incoming)
    return report_out(report)


@router.post("/readings", response_model=IngestReportOut)
def ingest_readings(
    body: ReadingsIn, request: Request, caller: ReadingsWriter, key: OptionalIdempotencyKey
) -> JSONResponse:
    """Ingest a batch of readings and bill them at once. Sending a batch again is safe (stored
    readings are recognised as duplicates); with an Idempotency-Key the first answer repeats."""
    subject = f"readings:{len(body.readings)}"
    if key is None:
        report = _ingest(caller, body)
        audited(caller, action="readings.ingest", subject=subject, detail=report.model_dump())
        return JSONResponse(report.model_dump(mode="json"))
    return run_once(
        caller,
        request,
        key=key,
        payload=body,
        action="readings.ingest",
        subject=subject,
        perform=lambda: (_ingest(caller, body), False),
        status_code=200,
    )


@router.get("/quarantine", response_model=Page[QuarantineOut])
def list_quarantine(
    caller: Reader,
    status: Literal["open", "released", "discarded"] = "open",
    meter_id: Id | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[QuarantineOut]:
    """Readings that did not fit, with the reason (open ones by default)."""
    with caller.db.read() as conn:
        rows, next_cursor = queries.list_quarantine(
            conn, caller.organisation_id, status, meter_id, Window(after_id(cursor), limit)
        )
    return Page[QuarantineOut](
        items=[QuarantineOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.post(
    "/quarantine/{quarantine_id}/release",
    response_model=QuarantineResolvedOut,
    status_code=201,
    responses=REPLAY,
)
def release(
    quarantine_id: Id, request: Request, caller: QuarantineWriter, key: IdempotencyKey
) -> JSONResponse:
    """Accept a quarantined reading as real and bill it (a decrease becomes a device reset)."""
    with caller.db.read() as conn:
        queries.one_quarantined(conn, caller.organisation_id, quarantine_id)

    def perform() -> tuple[BaseModel, bool]:
        report = corrections.release(
            caller.db,
            organisation_id=caller.organisation_id,
            quarantine_id=quarantine_id,
            actor=caller.actor,
        )
        return QuarantineResolvedOut(
            id=quarantine_id, status="released", report=report_out(report)
        ), False

    return run_once(
        caller,
        request,
        key=key,
        payload={"quarantine_id": quarantine_id},
        action="reading.release",
        subject=f"quarantine:{quarantine_id}",
        perform=perform,
    )


@router.post("/quarantine/{quarantine_id}/discard", response_model=QuarantineResolvedOut)
def discard(quarantine_id: Id, caller: QuarantineWriter) -> QuarantineResolvedOut:
    """Keep a quarantined reading on record but never bill it."""
    with caller.db.read() as conn:
        queries.one_quarantined(conn, caller.organisation_id, quarantine_id)
    corrections.discard(
        caller.db,
        organisation_id=caller.organisation_id,
        quarantine_id=quarantine_id,
        actor=caller.actor,
    )
    audited(caller, action="reading.discard", subject=f"quarantine:{quarantine_id}")
    return QuarantineResolvedOut(id=quarantine_id, status="discarded")
