"""The account opening wizard (开户, F-OPEN): 1. room and customer, 2. meters, tariffs and
account number, whether the tenant buys money or quantity (购量), 3. initial credit and a review,
then open — through the API's own handlers (a
new customer with ``POST /customers``, the account with ``POST /accounts`` and the form's
idempotency key). What was entered travels in the form, so any step can go back."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse

from meterdesk.access.model import Permission, PermissionDeniedError
from meterdesk.api.deps import AccountsWriter, Caller
from meterdesk.api.routers import accounts as accounts_api
from meterdesk.api.routers import places as places_api
from meterdesk.api.schemas.accounts import AccountIn
from meterdesk.api.schemas.places import CustomerIn
from meterdesk.billing.quantity_model import CreditUnit, parse_credit_unit
from meterdesk.reports import opening
from meterdesk.shared.contacts import (
    is_landline,
    optional_email,
    optional_openid,
    optional_phone,
)
from meterdesk.shared.errors import MeterdeskError, ValidationError
from meterdesk.sites import service as sites
from meterdesk.web.forms import blank_to_none, build
from meterdesk.web.i18n import LANGUAGE_NAMES
from meterdesk.web.routes.common import answer_of, new_key, page

router = APIRouter(include_in_schema=False)
Short = Annotated[str, Form(max_length=200)]


@dataclass
class WizardData:
    room_id: int | None = None
    customer_id: int | None = None
    customer_name: str = ""
    customer_phone: str = ""
    customer_email: str = ""
    customer_language: str = "zh-CN"  # what a new customer's messages are written in
    number: str = ""
    billing_mode: str = "platform"
    credit_unit: str = "money"  # or "quantity" (购量: kWh or m³ bought at today's price)
    overdraft_limit: str = "0"
    meter: list[int] = field(default_factory=list)
    tariff: list[str] = field(default_factory=list)
    reading: list[str] = field(default_factory=list)
    initial_credit: str = "0"
    payment_method: str = "cash"
    key: str = ""
    # WeChat gives one tenant an openid per app: the official account's and the mini program's
    customer_wechat_openid: str = ""
    customer_wechat_mini_openid: str = ""

    def chosen(self) -> list[tuple[int, int, str | None]]:
        """(meter, tariff, opening reading) of each meter given a tariff."""
        rows = zip(self.meter, self.tariff, self.reading, strict=False)
        return [(m, int(t), blank_to_none(r)) for m, t, r in rows if t.strip().isdigit()]


def wizard_data(
    room_id: Annotated[int | None, Form()] = None,
    customer_id: Annotated[int | None, Form()] = None,
    customer_name: Short = "",
    customer_phone: Short = "",
    customer_email: Short = "",
    customer_language: Short = "zh-CN",
    number: Short = "",
    billing_mode: Short = "platform",
    credit_unit: Short = "money",
    overdraft_limit: Short = "0",
    meter: Annotated[list[int] | None, Form()] = None,
    tariff: Annotated[list[str] | None, Form()] = None,
    reading: Annotated[list[str] | None, Form()] = None,
    initial_credit: Short = "0",
    payment_method: Short = "cash",
    key: Short = "",
    customer_wechat_openid: Short = "",
    customer_wechat_mini_openid: Short = "",
) -> WizardData:
    data = WizardData(
        room_id, customer_id, customer_name.strip(), customer_phone.strip(), customer_email.strip(),
        customer_language, number.strip(), billing_mode, credit_unit.strip() or "money",
        overdraft_limit.strip() or "0", meter or [], tariff or [],
        reading or [], initial_credit.strip() or "0", payment_method, key or new_key(),
    )  # fmt: skip
    return replace(
        data,
        customer_wechat_openid=customer_wechat_openid.strip(),
        customer_wechat_mini_openid=customer_wechat_mini_openid.strip(),
    )


Wizard = Annotated[WizardData, Depends(wizard_data)]


def _context(caller: Caller, data: WizardData, step: int, q: str | None = None) -> dict[str, Any]:
    with caller.db.read() as conn:
        org = caller.organisation_id
        context: dict[str, Any] = {
            "data": data,
            "step": step,
            "nav": "open",
            "fields": asdict(data),
            "can_credit": Permission.MONEY_WRITE in caller.principal.permissions(),
            "rooms": opening.vacant_rooms(conn, org, q) if step == 1 else [],
            "room_name": opening.room_name(conn, org, data.room_id) if data.room_id else None,
            "customer": opening.customer_name(conn, org, data.customer_id)
            if data.customer_id
            else None,
            "message_languages": LANGUAGE_NAMES,
            # a new customer's phone, checked on the first step: accepted, but SMS cannot reach it
            "customer_landline": bool(data.customer_phone) and is_landline(data.customer_phone),
        }
        if step >= 2 and data.room_id:
            context["meters"] = opening.free_meters(conn, org, data.room_id)
            context["tariffs"] = opening.tariff_options(conn, org)
    return context


def _check(data: WizardData, step: int) -> WizardData:
    """``data`` with a new customer's phone, e-mail and mini program openid as they will be stored (checked on the
    first step, where they were typed, not only when the account is opened)."""
    if step >= 1 and (
        data.room_id is None or (data.customer_id is None and not data.customer_name)
    ):
        raise ValidationError("choose a room and a customer (or enter a new customer's name)")
    if step >= 2 and (not data.number or not data.chosen()):
        raise ValidationError("enter the account number and give at least one meter a tariff")
    if step >= 2:
        parse_credit_unit(data.credit_unit)  # a clear error on the step that chose it
    if step >= 1 and data.customer_id is None:
        phone = optional_phone(data.customer_phone, field="customer_phone")
        email = optional_email(data.customer_email, field="customer_email")
        mini = optional_openid(
            data.customer_wechat_mini_openid, field="customer_wechat_mini_openid"
        )
        data = replace(
            data,
            customer_phone=phone or "",
            customer_email=email or "",
            customer_wechat_mini_openid=mini or "",
        )
    return data


@router.get("/accounts/open", response_class=HTMLResponse)
def wizard_page(
    request: Request,
    caller: AccountsWriter,
    room_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    q: Annotated[str | None, Query(max_length=64)] = None,
) -> HTMLResponse:
    data = WizardData(room_id=room_id, key=new_key())
    context = _context(caller, data, 1, q)
    template = (
        "partials/wizard_rooms.html"
        if request.headers.get("HX-Target") == "room-choice"
        else "wizard.html"
    )
    return page(request, caller, template, context)


@router.get("/accounts/open/customers", response_class=HTMLResponse)
def customer_choice(
    request: Request,
    caller: AccountsWriter,
    q: Annotated[str | None, Query(alias="cq", max_length=64)] = None,
) -> HTMLResponse:
    with caller.db.read() as conn:
        found = opening.find_customers(conn, caller.organisation_id, q)
    return page(request, caller, "partials/wizard_customers.html", {"customers": found})


@router.post("/accounts/open/step", response_class=HTMLResponse)
def wizard_step(
    request: Request, caller: AccountsWriter, data: Wizard, step: Annotated[int, Form(ge=0, le=3)]
) -> HTMLResponse:
    """Check what step ``step`` entered and show the next one (``step`` 0: back to the first)."""
    checked = _check(data, step)
    return page(request, caller, "partials/wizard_step.html", _context(caller, checked, step + 1))


def _customer(caller: Caller, request: Request, data: WizardData) -> int:
    if data.customer_id is not None:
        return data.customer_id
    caller.principal.organisation(Permission.PLACES_WRITE)  # a new customer is a place write
    body = build(
        CustomerIn,
        name=data.customer_name,
        phone=blank_to_none(data.customer_phone),
        email=blank_to_none(data.customer_email),
        wechat_openid=blank_to_none(data.customer_wechat_openid),
        wechat_mini_openid=blank_to_none(data.customer_wechat_mini_openid),
        language=data.customer_language,
    )
    # The same name and phone typed again is the same tenant (as presets and imports find
    # them): the account goes to that customer rather than to a second copy of them.
    same = sites.same_customer(
        caller.db, organisation_id=caller.organisation_id, name=body.name, phone=body.phone
    )
    if same is not None:
        return same
    return int(places_api.create_customer(body, caller).id)


def _open(caller: Caller, request: Request, data: WizardData) -> dict[str, Any]:
    meters = [{"meter_id": m, "tariff_id": t, "reading": r} for m, t, r in data.chosen()]
    body = build(
        AccountIn,
        number=data.number,
        customer_id=data.customer_id,
        room_id=data.room_id,
        meters=meters,
        billing_mode=data.billing_mode,
        overdraft_limit=data.overdraft_limit,
        initial_credit=data.initial_credit,
        payment_method=data.payment_method,
        **_credit_unit(data),
    )
    return answer_of(accounts_api.open_account(body, request, caller, data.key))


def _credit_unit(data: WizardData) -> dict[str, str]:
    """Money is the API's default, so only a quantity account names its unit: the body stays
    what it was for every account the console opened before quantity credit."""
    unit = parse_credit_unit(data.credit_unit)
    return {"credit_unit": unit.value} if unit is CreditUnit.QUANTITY else {}


@router.post("/accounts/open", response_class=HTMLResponse)
def open_account(request: Request, caller: AccountsWriter, data: Wizard) -> HTMLResponse:
    data = _check(data, 2)
    if (
        data.initial_credit.strip("0. ")
        and Permission.MONEY_WRITE not in caller.principal.permissions()
    ):
        raise PermissionDeniedError("putting credit on an account needs the cashier or admin role")
    data = replace(data, customer_id=_customer(caller, request, data))
    try:
        answer = _open(caller, request, data)
    except MeterdeskError as error:
        context = {**_context(caller, data, 3), "error": str(error)}
        return page(request, caller, "partials/wizard_step.html", context, status_code=422)
    return page(request, caller, "partials/wizard_done.html", {"answer": answer, "data": data})
