"""Meters, device replacement (换表), a meter's readings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from meterdesk.api.deps import Caller, IdempotencyKey, MetersWriter, Reader
from meterdesk.api.errors import ERROR_RESPONSES
from meterdesk.api.idempotency import run_once
from meterdesk.api.pagination import Cursor, Limit, Page, after_id, decode
from meterdesk.api.queries import meters as queries
from meterdesk.api.queries.common import Window
from meterdesk.api.queries.places import one
from meterdesk.api.schemas.common import Id, Instant
from meterdesk.api.schemas.meters import (
    MeterIn,
    MeterOut,
    ReadingOut,
    ReplacementIn,
    ReplacementOut,
    Utility,
)
from meterdesk.billing import corrections
from meterdesk.metering import service
from meterdesk.metering.tables import meters
from meterdesk.shared.money import parse_quantity

router = APIRouter(responses=ERROR_RESPONSES, tags=["meters"])


def _meter(caller: Caller, meter_id: Id) -> MeterOut:
    with caller.db.read() as conn:
        row = one(conn, meters, caller.organisation_id, meter_id, "meter")
    return MeterOut.model_validate(queries.meter_dict(row))


@router.get("/meters", response_model=Page[MeterOut])
def list_meters(
    caller: Reader,
    site_id: Id | None = None,
    room_id: Id | None = None,
    utility: Utility | None = None,
    q: Annotated[str | None, Query(max_length=64, description="part of the meter number")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[MeterOut]:
    where = queries.MeterFilter(site_id, room_id, utility, q)
    with caller.db.read() as conn:
        rows, next_cursor = queries.list_meters(
            conn, caller.organisation_id, where, Window(after_id(cursor), limit)
        )
    items = [MeterOut.model_validate(queries.meter_dict(r)) for r in rows]
    return Page[MeterOut](items=items, next_cursor=next_cursor)


@router.post("/meters", response_model=MeterOut, status_code=201)
def create_meter(body: MeterIn, caller: MetersWriter) -> MeterOut:
    """Register a meter in a room (or at a site, for a public meter)."""
    spec = service.MeterSpec(
        number=body.number,
        utility=body.utility,
        kind=body.kind,
        protocol=body.protocol,
        address=body.address,
        room_id=body.room_id,
        site_id=body.site_id,
        ct_ratio=body.ct_ratio,
        pt_ratio=body.pt_ratio,
        register_modulus=body.register_modulus,
        has_band_registers=body.has_band_registers,
        max_rate_per_hour=body.max_rate_per_hour,
        installed_on=body.installed_on,
    )
    meter_id = service.create_meter(
        caller.db, organisation_id=caller.organisation_id, spec=spec, actor=caller.actor
    )
    return _meter(caller, meter_id)


@router.get("/meters/{meter_id}", response_model=MeterOut)
def get_meter(meter_id: Id, caller: Reader) -> MeterOut:
    return _meter(caller, meter_id)


@router.post(
    "/meters/{meter_id}/replacement",
    response_model=ReplacementOut,
    status_code=201,
    responses={200: {"model": ReplacementOut, "description": "Idempotent replay"}},
)
def replace_meter(
    meter_id: Id,
    body: ReplacementIn,
    request: Request,
    caller: MetersWriter,
    key: IdempotencyKey,
) -> JSONResponse:
    """Replace the meter's device: bill the old one to its final reading, start the new one."""
    _meter(caller, meter_id)  # 404 for a meter of another organisation

    def perform() -> tuple[BaseModel, bool]:
        replacement = corrections.Replacement(
            meter_id=meter_id,
            at=body.at,
            old_final_total=parse_quantity(body.old_final_total, field="old_final_total"),
            new_initial_total=parse_quantity(body.new_initial_total, field="new_initial_total"),
            new_address=body.new_address,
        )
        generation = corrections.replace_meter(
            caller.db,
            organisation_id=caller.organisation_id,
            replacement=replacement,
            actor=caller.actor,
        )
        return ReplacementOut(meter_id=meter_id, generation=generation), False

    return run_once(
        caller,
        request,
        key=key,
        payload=body,
        action="meter.replace",
        subject=f"meter:{meter_id}",
        perform=perform,
    )


@router.get("/meters/{meter_id}/readings", response_model=Page[ReadingOut])
def list_readings(
    meter_id: Id,
    caller: Reader,
    start: Instant | None = None,
    end: Instant | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[ReadingOut]:
    """Accepted readings of a meter in measurement-time order, in ``[start, end)``."""
    _meter(caller, meter_id)
    window = queries.ReadingWindow(start, end, decode(cursor, 2), limit)
    with caller.db.read() as conn:
        rows, next_cursor = queries.list_readings(conn, meter_id, window)
    return Page[ReadingOut](
        items=[ReadingOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )
