"""Tariffs (电价方案) and their dated versions; the definition is JSON with prices as decimal
strings (floats are refused: they are not exact)."""

from __future__ import annotations

from fastapi import APIRouter

from meterdesk.api.deps import Caller, Reader, TariffsWriter
from meterdesk.api.errors import ERROR_RESPONSES
from meterdesk.api.idempotency import audited
from meterdesk.api.pagination import Cursor, Limit, Page, after_id
from meterdesk.api.queries import tariffs as queries
from meterdesk.api.queries.common import Window
from meterdesk.api.schemas.common import Id
from meterdesk.api.schemas.meters import Utility
from meterdesk.api.schemas.tariffs import (
    TariffIn,
    TariffOut,
    TariffSummaryOut,
    TariffVersionIn,
    TariffVersionOut,
)
from meterdesk.shared.time import local_date, zone
from meterdesk.sites.tables import organisations
from meterdesk.tariffs import service

router = APIRouter(responses=ERROR_RESPONSES, tags=["tariffs"])


def _describe(caller: Caller, tariff_id: Id) -> TariffOut:
    found = service.describe(caller.db, organisation_id=caller.organisation_id, tariff_id=tariff_id)
    return TariffOut.model_validate(found)


@router.get("/tariffs", response_model=Page[TariffSummaryOut])
def list_tariffs(
    caller: Reader, utility: Utility | None = None, limit: Limit = 50, cursor: Cursor = None
) -> Page[TariffSummaryOut]:
    """Tariffs with the start of the version in force today (the organisation's date)."""
    with caller.db.read() as conn:
        timezone = conn.execute(
            organisations.select()
            .with_only_columns(organisations.c.timezone)
            .where(organisations.c.id == caller.organisation_id)
        ).scalar_one()
        today = local_date(caller.db.clock(), zone(timezone))
        rows, next_cursor = queries.list_tariffs(
            conn, caller.organisation_id, utility, today, Window(after_id(cursor), limit)
        )
    items = [TariffSummaryOut.model_validate(r) for r in rows]
    return Page[TariffSummaryOut](items=items, next_cursor=next_cursor)


@router.post("/tariffs", response_model=TariffOut, status_code=201)
def create_tariff(body: TariffIn, caller: TariffsWriter) -> TariffOut:
    """Create a tariff from its full definition (utility and versions)."""
    tariff_id = service.create_tariff(
        caller.db,
        organisation_id=caller.organisation_id,
        name=body.name,
        definition=body.definition,
        actor=caller.actor,
    )
    audited(
        caller, action="tariff.create", subject=f"tariff:{tariff_id}", detail={"name": body.name}
    )
    return _describe(caller, tariff_id)


@router.get("/tariffs/{tariff_id}", response_model=TariffOut)
def get_tariff(tariff_id: Id, caller: Reader) -> TariffOut:
    """A tariff with every version's definition."""
    return _describe(caller, tariff_id)


@router.get("/tariffs/{tariff_id}/versions", response_model=list[TariffVersionOut])
def list_versions(tariff_id: Id, caller: Reader) -> list[TariffVersionOut]:
    """The tariff's versions in effective-date order, with who added each and when."""
    with caller.db.read() as conn:
        rows = queries.list_versions(conn, caller.organisation_id, tariff_id)
    return [TariffVersionOut.model_validate(r) for r in rows]


@router.post("/tariffs/{tariff_id}/versions", response_model=TariffOut, status_code=201)
def add_version(tariff_id: Id, body: TariffVersionIn, caller: TariffsWriter) -> TariffOut:
    """Add a version effective from a later date than today (the past is never re-priced)."""
    effective = service.add_version(
        caller.db,
        organisation_id=caller.organisation_id,
        tariff_id=tariff_id,
        version=body.version,
        actor=caller.actor,
    )
    audited(
        caller,
        action="tariff.add_version",
        subject=f"tariff:{tariff_id}",
        detail={"effective_from": effective.isoformat()},
    )
    return _describe(caller, tariff_id)
