"""The prepaid control loop (issue 4): alarm plans (余额告警), friendly-hours profiles, a site's
holiday calendar, an account's supply policy (cut, protect 保电, restore, alarm amounts) and
emergency credit (应急用电).

A policy change is evaluated at once (protect on restores a cut supply) and emergency credit
moves money, so both take an ``Idempotency-Key`` and are audited with the caller's address.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import select

from meterdesk.api.deps import (
    AccountsWriter,
    Caller,
    Cashier,
    IdempotencyKey,
    PlacesWriter,
    Reader,
)
from meterdesk.api.errors import ERROR_RESPONSES
from meterdesk.api.idempotency import audited, run_once
from meterdesk.api.pagination import Cursor, Limit, Page, after_id, encode
from meterdesk.api.queries.places import one
from meterdesk.api.routers.accounts import number_of, replay_doc
from meterdesk.api.schemas.common import Id
from meterdesk.api.schemas.control import (
    AlarmPlanIn,
    AlarmPlanOut,
    EmergencyCreditOut,
    FriendlyProfileIn,
    FriendlyProfileOut,
    HolidayIn,
    HolidayOut,
    PolicyIn,
    PolicyOut,
)
from meterdesk.billing import control_admin, control_read, control_revise, statements
from meterdesk.billing.outbox import DatabaseOutbox
from meterdesk.billing.tables import alarm_plans, friendly_profiles
from meterdesk.ledger.tables import transfers
from meterdesk.shared.errors import NotFoundError, ValidationError
from meterdesk.shared.money import format_money, from_fen, parse_money
from meterdesk.sites.tables import sites

router = APIRouter(responses=ERROR_RESPONSES, tags=["control"])
T = TypeVar("T")


def paged(
    items: Sequence[T], id_of: Callable[[T], int], cursor: str | None, limit: int
) -> tuple[list[T], str | None]:
    """One page of a short list (an organisation's plans or profiles), in id order."""
    after = after_id(cursor) or 0
    rest = sorted((item for item in items if id_of(item) > after), key=id_of)
    if len(rest) <= limit:
        return rest, None
    return rest[:limit], encode(id_of(rest[limit - 1]))


# --- alarm plans -------------------------------------------------------------------------------


@router.get("/alarm-plans", response_model=Page[AlarmPlanOut])
def list_alarm_plans(
    caller: Reader, limit: Limit = 50, cursor: Cursor = None
) -> Page[AlarmPlanOut]:
    """Alarm plans: levels by amount or by days of credit left, each with its channels."""
    found = control_read.list_alarm_plans(caller.db, organisation_id=caller.organisation_id)
    items, next_cursor = paged(found, lambda plan: plan.id, cursor, limit)
    return Page[AlarmPlanOut](
        items=[AlarmPlanOut.model_validate(p, from_attributes=True) for p in items],
        next_cursor=next_cursor,
    )


@router.post("/alarm-plans", response_model=AlarmPlanOut, status_code=201)
def create_alarm_plan(body: AlarmPlanIn, caller: AccountsWriter) -> AlarmPlanOut:
    """Create an alarm plan (409 when the name is taken)."""
    levels = [level.model_dump(exclude_none=True) for level in body.levels]
    plan_id = control_admin.create_alarm_plan(
        caller.db,
        organisation_id=caller.organisation_id,
        name=body.name,
        levels=levels,
        actor=caller.actor,
    )
    audited(caller, action="alarm_plan.create", subject=f"alarm_plan:{plan_id}")
    return get_alarm_plan(plan_id, caller)


@router.get("/alarm-plans/{alarm_plan_id}", response_model=AlarmPlanOut)
def get_alarm_plan(alarm_plan_id: Id, caller: Reader) -> AlarmPlanOut:
    found = control_read.alarm_plan(
        caller.db, organisation_id=caller.organisation_id, plan_id=alarm_plan_id
    )
    return AlarmPlanOut.model_validate(found, from_attributes=True)


@router.put("/alarm-plans/{alarm_plan_id}", response_model=AlarmPlanOut)
def revise_alarm_plan(alarm_plan_id: Id, body: AlarmPlanIn, caller: AccountsWriter) -> AlarmPlanOut:
    """Replace a plan's name and levels. Every open account on it is decided again at once: a
    tenant already below a raised level is warned now (409 when the name is taken)."""
    control_revise.revise_alarm_plan(
        caller.db,
        organisation_id=caller.organisation_id,
        plan_id=alarm_plan_id,
        name=body.name,
        levels=[level.model_dump(exclude_none=True) for level in body.levels],
        actor=caller.actor,
        outbox=DatabaseOutbox(caller.db.clock),
    )
    audited(caller, action="alarm_plan.update", subject=f"alarm_plan:{alarm_plan_id}")
    return get_alarm_plan(alarm_plan_id, caller)


# --- friendly hours ----------------------------------------------------------------------------


@router.get("/friendly-profiles", response_model=Page[FriendlyProfileOut])
def list_friendly_profiles(
    caller: Reader, limit: Limit = 50, cursor: Cursor = None
) -> Page[FriendlyProfileOut]:
    """Friendly-hours profiles: windows, weekends and holidays in which a due cut waits."""
    found = control_read.list_friendly_profiles(caller.db, organisation_id=caller.organisation_id)
    items, next_cursor = paged(found, lambda profile: profile.id, cursor, limit)
    return Page[FriendlyProfileOut](
        items=[FriendlyProfileOut.model_validate(p, from_attributes=True) for p in items],
        next_cursor=next_cursor,
    )


@router.post("/friendly-profiles", response_model=FriendlyProfileOut, status_code=201)
def create_friendly_profile(body: FriendlyProfileIn, caller: AccountsWriter) -> FriendlyProfileOut:
    """Create a friendly-hours profile (409 when the name is taken)."""
    profile_id = control_admin.create_friendly_profile(
        caller.db,
        organisation_id=caller.organisation_id,
        name=body.name,
        windows=[window.model_dump() for window in body.windows],
        weekends=body.weekends,
        holidays=body.holidays,
        actor=caller.actor,
    )
    audited(caller, action="friendly.create", subject=f"friendly:{profile_id}")
    return get_friendly_profile(profile_id, caller)


@router.get("/friendly-profiles/{friendly_profile_id}", response_model=FriendlyProfileOut)
def get_friendly_profile(friendly_profile_id: Id, caller: Reader) -> FriendlyProfileOut:
    found = control_read.friendly_profile(
        caller.db, organisation_id=caller.organisation_id, profile_id=friendly_profile_id
    )
    return FriendlyProfileOut.model_validate(found, from_attributes=True)


@router.put("/friendly-profiles/{friendly_profile_id}", response_model=FriendlyProfileOut)
def revise_friendly_profile(
    friendly_profile_id: Id, body: FriendlyProfileIn, caller: AccountsWriter
) -> FriendlyProfileOut:
    """Replace a profile's name, windows, weekends and holidays. Every open account on it is
    decided again at once (409 when the name is taken)."""
    control_revise.revise_friendly_profile(
        caller.db,
        organisation_id=caller.organisation_id,
        profile_id=friendly_profile_id,
        name=body.name,
        windows=[window.model_dump() for window in body.windows],
        weekends=body.weekends,
        holidays=body.holidays,
        actor=caller.actor,
        outbox=DatabaseOutbox(caller.db.clock),
    )
    audited(caller, action="friendly.update", subject=f"friendly:{friendly_profile_id}")
    return get_friendly_profile(friendly_profile_id, caller)


# --- site holidays -----------------------------------------------------------------------------


def _holidays(caller: Caller, site_id: int) -> list[HolidayOut]:
    with caller.db.read() as conn:
        one(conn, sites, caller.organisation_id, site_id, "site")
    days = control_admin.list_site_holidays(
        caller.db, organisation_id=caller.organisation_id, site_id=site_id
    )
    return [
        HolidayOut(site_id=site_id, day=date.fromisoformat(d["day"]), name=d["name"]) for d in days
    ]


@router.get("/sites/{site_id}/holidays", response_model=Page[HolidayOut])
def list_holidays(site_id: Id, caller: Reader) -> Page[HolidayOut]:
    """The site's public-holiday calendar (local dates), all on one page."""
    return Page[HolidayOut](items=_holidays(caller, site_id), next_cursor=None)


def _set_holiday(caller: Caller, site_id: int, day: date, name: str, remove: bool) -> None:
    control_admin.set_site_holiday(
        caller.db,
        organisation_id=caller.organisation_id,
        site_id=site_id,
        day=day,
        name=name,
        actor=caller.actor,
        remove=remove,
    )
    action = "holiday.remove" if remove else "holiday.set"
    audited(caller, action=action, subject=f"site:{site_id}", detail={"day": day.isoformat()})


@router.put("/sites/{site_id}/holidays/{day}", response_model=HolidayOut)
def set_holiday(site_id: Id, day: date, body: HolidayIn, caller: PlacesWriter) -> HolidayOut:
    """Mark a local date as a public holiday of the site (replaces its name if already set)."""
    _set_holiday(caller, site_id, day, body.name, remove=False)
    return HolidayOut(site_id=site_id, day=day, name=body.name)


@router.delete("/sites/{site_id}/holidays/{day}", response_model=HolidayOut)
def delete_holiday(site_id: Id, day: date, caller: PlacesWriter) -> HolidayOut:
    """Unmark a holiday (404 when the day is not one)."""
    found = next((h for h in _holidays(caller, site_id) if h.day == day), None)
    if found is None:
        raise NotFoundError(f"{day.isoformat()} is not a holiday of site {site_id}")
    _set_holiday(caller, site_id, day, found.name, remove=True)
    return found


# --- supply policy and emergency credit --------------------------------------------------------


def policy_out(caller: Caller, account_id: int) -> PolicyOut:
    view = control_read.account_policy(
        caller.db, organisation_id=caller.organisation_id, account_id=account_id
    )
    money = {
        "restore_threshold": format_money(from_fen(view.restore_threshold_fen)),
        "emergency_credit": format_money(from_fen(view.emergency_credit_fen)),
        "emergency_outstanding": format_money(from_fen(view.emergency_outstanding_fen)),
    }
    return PolicyOut.model_validate({**view.__dict__, **money})


@router.get("/accounts/{account_id}/policy", response_model=PolicyOut)
def get_policy(account_id: Id, caller: Reader) -> PolicyOut:
    """The account's supply policy (defaults until one is set) and the control loop's state."""
    return policy_out(caller, account_id)


def _named(caller: Caller, body: PolicyIn, field: str) -> str | None:
    """The name the policy change takes for an id given in the body: None (not given), ""
    (removed), or the name (404 when not the organisation's)."""
    if field not in body.model_fields_set:
        return None
    row_id = getattr(body, field)
    if row_id is None:
        return ""
    table, what = (
        (alarm_plans, "alarm plan")
        if field == "alarm_plan_id"
        else (friendly_profiles, "friendly-hours profile")
    )
    return control_read.name_of(
        caller.db, organisation_id=caller.organisation_id, table=table, row_id=row_id, what=what
    )


def policy_change(caller: Caller, body: PolicyIn) -> control_admin.PolicyChange:
    if not body.model_fields_set:
        raise ValidationError("policy: give at least one field to change")
    return control_admin.PolicyChange(
        alarm_plan=_named(caller, body, "alarm_plan_id"),
        alarm_overrides=None
        if body.alarm_amounts is None
        else {
            level: format_money(parse_money(v)) for level, v in sorted(body.alarm_amounts.items())
        },
        friendly_profile=_named(caller, body, "friendly_profile_id"),
        cut_at=body.cut_at,
        protect=body.protect,
        restore_threshold=body.restore_threshold,
        restore_mode=body.restore_mode,
        emergency_credit=body.emergency_credit,
    )


@router.patch(
    "/accounts/{account_id}/policy", response_model=PolicyOut, responses=replay_doc(PolicyOut)
)
def change_policy(
    account_id: Id, body: PolicyIn, request: Request, caller: AccountsWriter, key: IdempotencyKey
) -> JSONResponse:
    """Change the supply policy; evaluated at once (protect on restores a cut supply, a lower
    cut threshold may cut). Fields left out stay as they are."""
    number = number_of(caller, account_id)

    def perform() -> tuple[BaseModel, bool]:
        control_admin.set_account_policy(
            caller.db,
            organisation_id=caller.organisation_id,
            number=number,
            change=policy_change(caller, body),
            actor=caller.actor,
            outbox=DatabaseOutbox(caller.db.clock),
        )
        return policy_out(caller, account_id), False

    return run_once(
        caller,
        request,
        key=key,
        payload=body.model_dump(mode="json", exclude_unset=True),
        action="policy.set",
        subject=f"account:{number}",
        perform=perform,
        status_code=200,
    )


@router.post(
    "/accounts/{account_id}/emergency-credit",
    response_model=EmergencyCreditOut,
    status_code=201,
    responses=replay_doc(EmergencyCreditOut),
)
def take_emergency_credit(
    account_id: Id, request: Request, caller: Cashier, key: IdempotencyKey
) -> JSONResponse:
    """Credit the account's emergency amount once (409 when none is offered, the balance is
    above the cut threshold, or some is still owed); the next recharge repays it first."""
    number = number_of(caller, account_id)

    def perform() -> tuple[BaseModel, bool]:
        transfer_id = control_admin.take_emergency_credit(
            caller.db,
            organisation_id=caller.organisation_id,
            number=number,
            actor=caller.actor,
            outbox=DatabaseOutbox(caller.db.clock),
        )
        found = statements.balance(caller.db, organisation_id=caller.organisation_id, number=number)
        with caller.db.read() as conn:
            amount_fen = conn.execute(
                select(transfers.c.amount_fen).where(transfers.c.id == transfer_id)
            ).scalar_one()
        answer = EmergencyCreditOut(
            account_id=account_id,
            transfer_id=transfer_id,
            amount=format_money(from_fen(int(amount_fen))),
            balance=format_money(found.balance),
        )
        return answer, False

    return run_once(
        caller,
        request,
        key=key,
        payload={},
        action="money.emergency_credit",
        subject=f"account:{number}",
        perform=perform,
    )
