"""An account's supply policy from its room: alarm plan and per-account alarm amounts (告警金额),
protect (保电) and friendly hours. The form is turned into the API's ``PolicyIn`` and handed to
the API's own handler (``PATCH /accounts/{id}/policy``): the billing service evaluates the
change at once (protect on restores a cut supply) and audits it, the handler stores the answer
under the form's idempotency key and audits the client address."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Table, select

from meterdesk.api.deps import AccountsWriter, Caller
from meterdesk.api.routers import control as control_api
from meterdesk.api.schemas.common import Id
from meterdesk.api.schemas.control import PolicyIn
from meterdesk.billing.tables import alarm_plans, friendly_profiles
from meterdesk.shared.errors import NotFoundError
from meterdesk.web.forms import blank_to_none, build
from meterdesk.web.routes.actions import Key, require_account, result, room_state
from meterdesk.web.routes.common import answer_of

router = APIRouter(include_in_schema=False)
Amount = Annotated[str | None, Form(max_length=20)]
Name = Annotated[str | None, Form(max_length=100)]


def _id_of(caller: Caller, table: Table, name: str | None, what: str) -> int | None:
    """The id of the plan or profile the form names (the dialog lists names); None for "—"."""
    if not blank_to_none(name):
        return None
    with caller.db.read() as conn:
        found = conn.execute(
            select(table.c.id).where(
                table.c.organisation_id == caller.organisation_id, table.c.name == name
            )
        ).scalar_one_or_none()
    if found is None:
        raise NotFoundError(f"{what} {name!r} not found")
    return int(found)


@router.post("/rooms/{room_id}/policy", response_class=HTMLResponse)
def set_policy(
    room_id: Id,
    request: Request,
    caller: AccountsWriter,
    idempotency_key: Key,
    protect: Annotated[str | None, Form(max_length=5)] = None,
    alarm_plan: Name = None,
    alarm_1: Amount = None,
    alarm_2: Amount = None,
    alarm_3: Amount = None,
    friendly_profile: Name = None,
) -> HTMLResponse:
    account = require_account(room_state(caller, room_id))
    amounts: dict[str, Any] = {
        level: value.strip()
        for level, value in (("1", alarm_1), ("2", alarm_2), ("3", alarm_3))
        if value and value.strip()
    }
    body = build(
        PolicyIn,
        protect=protect == "on",
        alarm_plan_id=_id_of(caller, alarm_plans, alarm_plan, "alarm plan"),
        alarm_amounts=amounts,
        friendly_profile_id=_id_of(
            caller, friendly_profiles, friendly_profile, "friendly-hours profile"
        ),
    )
    answer = answer_of(
        control_api.change_policy(account.id, body, request, caller, idempotency_key)
    )
    return result(request, caller, {"kind": "policy", "answer": answer, "account": account})
