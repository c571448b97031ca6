"""An account's supply policy from its room: alarm plan and per-account alarm amounts (告警金额),
protect (保电) and friendly hours. The control loop evaluates the change at once (protect on
restores a cut supply) through the billing service, which audits it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from meterdesk.api.deps import AccountsWriter
from meterdesk.api.idempotency import run_once
from meterdesk.api.schemas.common import Id
from meterdesk.billing import control_admin
from meterdesk.billing.outbox import DatabaseOutbox
from meterdesk.shared.money import format_money, parse_money
from meterdesk.web.forms import blank_to_none
from meterdesk.web.routes.actions import Key, require_account, result, room_state
from meterdesk.web.routes.common import answer_of

router = APIRouter(include_in_schema=False)
Amount = Annotated[str | None, Form(max_length=20)]
Name = Annotated[str | None, Form(max_length=100)]


class PolicySet(BaseModel):
    account: str
    protect: bool
    alarm_plan: str | None
    alarm_amounts: dict[str, str]
    friendly_profile: str | None


def _amounts(values: dict[str, str | None]) -> dict[str, str]:
    return {
        level: format_money(parse_money(value, field=f"alarm level {level}"))
        for level, value in values.items()
        if blank_to_none(value)
    }


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
    change = control_admin.PolicyChange(
        alarm_plan=alarm_plan or "",
        alarm_overrides=_amounts({"1": alarm_1, "2": alarm_2, "3": alarm_3}),
        friendly_profile=friendly_profile or "",
        protect=protect == "on",
    )

    def perform() -> tuple[BaseModel, bool]:
        control_admin.set_account_policy(
            caller.db,
            organisation_id=caller.organisation_id,
            number=account.number,
            change=change,
            actor=caller.actor,
            outbox=DatabaseOutbox(caller.db.clock),
        )
        answer = PolicySet(
            account=account.number,
            protect=bool(change.protect),
            alarm_plan=change.alarm_plan or None,
            alarm_amounts=change.alarm_overrides or {},
            friendly_profile=change.friendly_profile or None,
        )
        return answer, False

    answer = answer_of(
        run_once(
            caller,
            request,
            key=idempotency_key,
            payload=change.__dict__,
            action="policy.set",
            subject=f"account:{account.number}",
            perform=perform,
        )
    )
    return result(request, caller, {"kind": "policy", "answer": answer, "account": account})
