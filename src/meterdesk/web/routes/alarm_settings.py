"""Alarm plans (告警方案) and friendly-hours profiles (友好时段) in the console: every plan and
profile of the organisation on one page, each a card that an operator edits in place, and a card
for a new one. The forms are turned into the API's bodies and handed to the API's own handlers
(``POST``/``PUT /alarm-plans``, ``/friendly-profiles``), which validate, audit with the client
address and — for a revision — decide again at once for every open account on the plan or
profile (:mod:`meterdesk.billing.control_revise`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from meterdesk.api.deps import AccountsWriter, Caller, Reader
from meterdesk.api.routers import control as control_api
from meterdesk.api.schemas.common import Id
from meterdesk.api.schemas.control import AlarmPlanIn, FriendlyProfileIn
from meterdesk.billing import control_config, control_revise
from meterdesk.billing.tables import account_controls
from meterdesk.shared.errors import ValidationError
from meterdesk.web.forms import blank_to_none, build
from meterdesk.web.routes.common import page

router = APIRouter(include_in_schema=False)
LEVELS = (1, 2, 3)
Text = Annotated[str | None, Form(max_length=100)]
Name = Annotated[str, Form(max_length=200)]
CHANNELS = ("sms", "email", "voice", "wechat", "wechat_mini", "push", "webhook", "log")


@router.get("/settings/alarms", response_class=HTMLResponse)
def alarms_page(request: Request, caller: Reader) -> HTMLResponse:
    plans = control_api.list_alarm_plans(caller, limit=200, cursor=None).items
    profiles = control_api.list_friendly_profiles(caller, limit=200, cursor=None).items
    context = {
        "plans": [_plan_card(caller, plan.model_dump()) for plan in plans],
        "profiles": [_profile_card(caller, p.model_dump()) for p in profiles],
        "channels": CHANNELS,
        "nav": "alarms",
    }
    return page(request, caller, "settings_alarms.html", context)


def _users(caller: Caller, column: Any, row_id: int) -> int:
    """Open accounts on the plan or profile: the ones a revision decides for again."""
    with caller.db.read() as conn:
        return len(control_revise.open_accounts_using(conn, caller.organisation_id, column, row_id))


def _plan_card(caller: Caller, plan: dict[str, Any], **extra: Any) -> dict[str, Any]:
    by_level = {level["level"]: level for level in plan["levels"]}
    return {
        **plan,
        "by_level": by_level,
        "accounts": _users(caller, account_controls.c.alarm_plan_id, plan["id"]),
        **extra,
    }


def _profile_card(caller: Caller, profile: dict[str, Any], **extra: Any) -> dict[str, Any]:
    spans = " ".join(f"{w['start']}-{w['end']}" for w in profile["windows"])
    return {
        **profile,
        "spans": spans,
        "accounts": _users(caller, account_controls.c.friendly_profile_id, profile["id"]),
        **extra,
    }


def _levels(form: dict[str, Any]) -> list[dict[str, Any]]:
    """The levels the form fills in (a level without an amount or days is left out)."""
    levels = []
    for level in LEVELS:
        amount = blank_to_none(form.get(f"amount_{level}"))
        days = blank_to_none(form.get(f"days_{level}"))
        if amount is None and days is None:
            continue
        item: dict[str, Any] = {
            "level": level,
            "channels": form.get(f"channels_{level}") or [],
            "repeat_count": blank_to_none(form.get(f"repeats_{level}")) or 0,
            "repeat_interval_hours": blank_to_none(form.get(f"hours_{level}")) or 24,
        }
        if amount is not None:
            item["amount"] = amount
        if days is not None:
            item["days_left"] = days
        levels.append(item)
    if not levels:
        raise ValidationError("levels: give an amount (or days of credit) for at least one level")
    return levels


async def _form(request: Request) -> dict[str, Any]:
    """The level fields (channels are checkboxes: one value per ticked box)."""
    raw = await request.form()
    values: dict[str, Any] = {}
    for level in LEVELS:
        for field in ("amount", "days", "repeats", "hours"):
            value = raw.get(f"{field}_{level}")
            values[f"{field}_{level}"] = value if isinstance(value, str) else None
        values[f"channels_{level}"] = [
            v for v in raw.getlist(f"channels_{level}") if isinstance(v, str)
        ]
    return values


@router.post("/settings/alarms/plans", response_class=HTMLResponse)
async def create_plan(request: Request, caller: AccountsWriter, name: Name) -> Response:
    body = build(AlarmPlanIn, name=name.strip(), levels=_levels(await _form(request)))
    control_api.create_alarm_plan(body, caller)
    return Response(status_code=204, headers={"HX-Redirect": "/settings/alarms"})


@router.post("/settings/alarms/plans/{plan_id}", response_class=HTMLResponse)
async def revise_plan(
    plan_id: Id, request: Request, caller: AccountsWriter, name: Name
) -> HTMLResponse:
    body = build(AlarmPlanIn, name=name.strip(), levels=_levels(await _form(request)))
    saved = control_api.revise_alarm_plan(plan_id, body, caller)
    card = _plan_card(caller, saved.model_dump(), saved=True)
    return page(
        request, caller, "partials/alarm_plan_card.html", {"plan": card, "channels": CHANNELS}
    )


def _profile_body(
    name: str, windows: str | None, weekends: str | None, holidays: str | None
) -> FriendlyProfileIn:
    return build(
        FriendlyProfileIn,
        name=name.strip(),
        windows=control_config.window_spans(
            (windows or "").replace(",", " ").replace("，", " ").split()
        ),
        weekends=weekends == "on",
        holidays=holidays == "on",
    )


@router.post("/settings/alarms/profiles", response_class=HTMLResponse)
def create_profile(
    caller: AccountsWriter,
    name: Name,
    windows: Text = None,
    weekends: Annotated[str | None, Form(max_length=5)] = None,
    holidays: Annotated[str | None, Form(max_length=5)] = None,
) -> Response:
    control_api.create_friendly_profile(_profile_body(name, windows, weekends, holidays), caller)
    return Response(status_code=204, headers={"HX-Redirect": "/settings/alarms"})


@router.post("/settings/alarms/profiles/{profile_id}", response_class=HTMLResponse)
def revise_profile(
    profile_id: Id,
    request: Request,
    caller: AccountsWriter,
    name: Name,
    windows: Text = None,
    weekends: Annotated[str | None, Form(max_length=5)] = None,
    holidays: Annotated[str | None, Form(max_length=5)] = None,
) -> HTMLResponse:
    body = _profile_body(name, windows, weekends, holidays)
    saved = control_api.revise_friendly_profile(profile_id, body, caller)
    card = _profile_card(caller, saved.model_dump(), saved=True)
    return page(request, caller, "partials/friendly_card.html", {"profile": card})
