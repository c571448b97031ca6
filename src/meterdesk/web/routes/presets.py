"""Pre-entered accounts (预录入, F-OPEN-PRESET) opened with one click, and bulk import from CSV or
Excel with the per-row report — through the API's own handlers, with a fresh idempotency key per
form."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse

from meterdesk.api.deps import AccountsWriter, Reader
from meterdesk.api.routers import presets as presets_api
from meterdesk.api.schemas.common import Id
from meterdesk.web.routes.common import ROOM_CHANGED, answer_of, new_key, page

router = APIRouter(include_in_schema=False)
TEMPLATE_HEADER = (
    "account_number,customer_name,customer_phone,site,building,floor,room,meter_numbers,tariffs,"
    "opening_readings,initial_credit,billing_mode"
)


@router.get("/accounts/presets", response_class=HTMLResponse)
def presets_page(request: Request, caller: Reader) -> HTMLResponse:
    found = presets_api.list_presets(caller, status="pending", limit=500, cursor=None)
    context = {"presets": found.items, "key": new_key(), "nav": "presets"}
    return page(request, caller, "presets.html", context)


@router.post("/accounts/presets/{preset_id}/open", response_class=HTMLResponse)
def open_preset(
    preset_id: Id,
    request: Request,
    caller: AccountsWriter,
    idempotency_key: Annotated[str, Form(min_length=8, max_length=100)],
) -> HTMLResponse:
    answer = answer_of(
        presets_api.open_preset(preset_id, request, caller, f"{idempotency_key}:{preset_id}")
    )
    return page(
        request,
        caller,
        "partials/preset_opened.html",
        {"answer": answer},
        headers={"HX-Trigger": ROOM_CHANGED},
    )


@router.get("/accounts/import", response_class=HTMLResponse)
def import_page(request: Request, caller: Reader) -> HTMLResponse:
    context = {"key": new_key(), "header": TEMPLATE_HEADER, "nav": "presets"}
    return page(request, caller, "import.html", context)


@router.post("/accounts/import", response_class=HTMLResponse)
def import_accounts(
    request: Request,
    caller: AccountsWriter,
    file: Annotated[UploadFile, File()],
    idempotency_key: Annotated[str, Form(min_length=8, max_length=100)],
    open_now: Annotated[bool, Form()] = False,
) -> HTMLResponse:
    answer = answer_of(
        presets_api.import_accounts(request, caller, idempotency_key, file, open_now)
    )
    return page(
        request, caller, "partials/import_report.html", {"report": answer, "key": new_key()}
    )
