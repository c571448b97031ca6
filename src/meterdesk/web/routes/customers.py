"""Customers (F-CUSTOMER) in the console: a list found by name or phone, and a customer's page
with their contact fields, whether they get deduction summaries (扣费通知) and their accounts.

The edit form is turned into the API's ``CustomerPatch`` and handed to the API's own handler
(``PATCH /customers/{id}``): the same checks (phones stored as E.164), the same service and the
same audit entry with the client address. Only the fields that differ from what is stored are
sent, so the audit entry names what the operator really changed. Editing needs ``places.write``
(checked by the handler's dependency); other roles see the page without the form."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse

from meterdesk.api.deps import Caller, PlacesWriter, Reader
from meterdesk.api.routers import places as places_api
from meterdesk.api.schemas.common import Id
from meterdesk.api.schemas.places import CustomerPatch
from meterdesk.reports import customers as customer_reports
from meterdesk.shared.contacts import is_landline
from meterdesk.web.forms import build
from meterdesk.web.i18n import LANGUAGE_NAMES
from meterdesk.web.routes.common import page

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
Search = Annotated[str | None, Query(max_length=64)]
Text = Annotated[str, Form(max_length=200)]
CONTACT_FIELDS = ("name", "phone", "email", "wechat_openid", "wechat_mini_openid", "language")


@router.get("/customers", response_class=HTMLResponse)
def customers_page(
    request: Request,
    caller: Reader,
    q: Search = None,
    page_number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    with caller.db.read() as conn:
        rows, total = customer_reports.customer_page(
            conn,
            caller.organisation_id,
            (q or "").strip() or None,
            offset=(page_number - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
        )
    context = {
        "customers": rows,
        "q": q or "",
        "total": total,
        "page_number": page_number,
        "pages": max(1, -(-total // PAGE_SIZE)),
        "nav": "customers",
    }
    return page(request, caller, "customers.html", context)


def _card(caller: Caller, customer_id: int, **extra: Any) -> dict[str, Any]:
    with caller.db.read() as conn:
        found = customer_reports.customer(conn, caller.organisation_id, customer_id)
    # A landline is accepted (voice calls reach it), so the card says SMS cannot: shown while
    # it is stored, so also right after the operator saved it.
    landline = bool(found["phone"]) and is_landline(found["phone"])
    return {
        "customer": found,
        "message_languages": LANGUAGE_NAMES,
        "landline": landline,
        **extra,
    }


@router.get("/customers/{customer_id}", response_class=HTMLResponse)
def customer_page(customer_id: Id, request: Request, caller: Reader) -> HTMLResponse:
    context = _card(caller, customer_id)
    with caller.db.read() as conn:
        owned = customer_reports.customer_accounts(conn, caller.organisation_id, customer_id)
    return page(
        request, caller, "customer.html", {**context, "accounts": owned, "nav": "customers"}
    )


def changes(stored: dict[str, Any], form: dict[str, Any]) -> dict[str, Any]:
    """The form's fields that differ from what is stored: a blank optional field clears it, the
    checkbox is whether the customer gets summaries (stored the other way round)."""
    found = {
        name: form[name].strip()
        for name in CONTACT_FIELDS
        if form[name].strip() != (stored[name] or "")
    }
    wanted = form["summaries"] is not None
    if wanted == bool(stored["summaries_opt_out"]):
        found["summaries"] = wanted
    return found


@router.post("/customers/{customer_id}", response_class=HTMLResponse)
def update_customer(
    customer_id: Id,
    request: Request,
    caller: PlacesWriter,
    name: Text,
    language: Annotated[str, Form(max_length=10)],
    phone: Text = "",
    email: Text = "",
    wechat_openid: Text = "",
    wechat_mini_openid: Text = "",
    summaries: Annotated[str | None, Form(max_length=5)] = None,
) -> HTMLResponse:
    stored = _card(caller, customer_id)["customer"]
    form = {
        "name": name,
        "phone": phone,
        "email": email,
        "wechat_openid": wechat_openid,
        "wechat_mini_openid": wechat_mini_openid,
        "language": language,
        "summaries": summaries,
    }
    changed = changes(stored, form)
    if changed:  # nothing changed: nothing written, nothing audited
        places_api.update_customer(customer_id, build(CustomerPatch, **changed), caller)
    context = _card(caller, customer_id, saved=bool(changed), unchanged=not changed)
    return page(request, caller, "partials/customer_card.html", context)
