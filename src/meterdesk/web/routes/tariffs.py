"""The tariff editor (电价方案): the list, a tariff's versions, a new tariff or a new version as
JSON with the definition's own validation messages, a preview of one day's bands, and a what-if
(a meter's last 30 days re-priced under the draft, nothing posted). Saving goes through the
API's handlers (``POST /tariffs``, ``POST /tariffs/{id}/versions``), which audit it."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from meterdesk.api.deps import Caller, Reader, TariffsWriter
from meterdesk.api.routers import tariffs as tariffs_api
from meterdesk.api.schemas.common import Id
from meterdesk.api.schemas.tariffs import TariffIn, TariffVersionIn
from meterdesk.metering.service import find_meter
from meterdesk.reports.whatif import what_if
from meterdesk.shared.errors import MeterdeskError, ValidationError
from meterdesk.shared.time import local_date
from meterdesk.tariffs import service
from meterdesk.web import tariff_draft
from meterdesk.web.forms import build
from meterdesk.web.routes.common import org_zone, page

router = APIRouter(include_in_schema=False)
Definition = Annotated[str, Form(max_length=200_000)]


@router.get("/tariffs", response_class=HTMLResponse)
def tariffs_page(request: Request, caller: Reader) -> HTMLResponse:
    found = tariffs_api.list_tariffs(caller, utility=None, limit=500, cursor=None)
    return page(request, caller, "tariffs.html", {"tariffs": found.items, "nav": "tariffs"})


def _editor(caller: Caller, tariff: dict[str, Any] | None) -> dict[str, Any]:
    tomorrow = local_date(caller.db.clock(), org_zone(caller)) + timedelta(days=1)
    if tariff is None:
        draft = {**tariff_draft.FLAT_EXAMPLE}
        draft["versions"] = [{**draft["versions"][0], "effective_from": tomorrow.isoformat()}]
    else:
        draft = {**tariff["versions"][-1], "effective_from": tomorrow.isoformat()}
    return {
        "tariff": tariff,
        "draft": tariff_draft.pretty(draft),
        "day": tomorrow,
        "nav": "tariffs",
    }


@router.get("/tariffs/new", response_class=HTMLResponse)
def new_tariff(request: Request, caller: Reader) -> HTMLResponse:
    return page(request, caller, "tariff.html", _editor(caller, None))


@router.get("/tariffs/{tariff_id}", response_class=HTMLResponse)
def tariff_page(tariff_id: Id, request: Request, caller: Reader) -> HTMLResponse:
    found = service.describe(caller.db, organisation_id=caller.organisation_id, tariff_id=tariff_id)
    return page(request, caller, "tariff.html", _editor(caller, found))


def _utility(caller: Caller, tariff_id: int | None) -> str | None:
    if tariff_id is None:
        return None
    found = service.describe(caller.db, organisation_id=caller.organisation_id, tariff_id=tariff_id)
    return str(found["utility"])


def _what_if(caller: Caller, draft: Any, meter: str) -> Any:
    if not meter.strip():
        return None
    with caller.db.read() as conn:
        meter_id = find_meter(conn, organisation_id=caller.organisation_id, number=meter.strip())
        start, end = tariff_draft.what_if_window(caller.db.clock())
        return what_if(conn, caller.organisation_id, meter_id, draft, start, end)


@router.post("/tariffs/check", response_class=HTMLResponse)
def check_draft(
    request: Request,
    caller: Reader,
    definition: Definition,
    day: Annotated[date, Form()],
    tariff_id: Annotated[int | None, Form(ge=1, le=2**31 - 1)] = None,
    meter: Annotated[str, Form(max_length=64)] = "",
) -> HTMLResponse:
    """Validate the draft; show the day's bands and, for a meter, the what-if."""
    context: dict[str, Any] = {"day": day}
    try:
        draft, _ = tariff_draft.draft_tariff(definition, utility=_utility(caller, tariff_id))
        context["bands"] = tariff_draft.day_bands(draft, day, org_zone(caller))
        context["whatif"] = _what_if(caller, draft, meter)
    except MeterdeskError as error:
        context["error"] = str(error)
    return page(request, caller, "partials/tariff_check.html", context)


@router.post("/tariffs", response_class=HTMLResponse)
def create_tariff(
    request: Request,
    caller: TariffsWriter,
    name: Annotated[str, Form(max_length=200)],
    definition: Definition,
) -> Response:
    _, parsed = tariff_draft.draft_tariff(definition, utility=None)
    if not isinstance(parsed, dict):
        raise ValidationError("definition: give the tariff as a JSON object")
    created = tariffs_api.create_tariff(
        build(TariffIn, name=name.strip(), definition=parsed), caller
    )
    return Response(status_code=204, headers={"HX-Redirect": f"/tariffs/{created.id}"})


@router.post("/tariffs/{tariff_id}/versions", response_class=HTMLResponse)
def add_version(
    tariff_id: Id, request: Request, caller: TariffsWriter, definition: Definition
) -> Response:
    _, parsed = tariff_draft.draft_tariff(definition, utility=_utility(caller, tariff_id))
    tariffs_api.add_version(tariff_id, build(TariffVersionIn, version=parsed), caller)
    return Response(status_code=204, headers={"HX-Redirect": f"/tariffs/{tariff_id}"})
