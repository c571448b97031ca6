"""Actions from a room (F-MON-CTRL): recharge, refund, take-back (退电, meter billing), relay
cut / restore, valve open / close, change a meter's tariff (改电价), and the supply policy
(protect 保电, alarm amounts, friendly hours).

Each action opens a confirmation dialog (``GET …/dialog/{action}``) whose form carries a fresh
idempotency key, so a double submit does the work once. The POST goes through the API's own
dependencies (role, organisation, CSRF header) and handlers (``money.recharge`` / ``refund``,
``commands.send_command``: the stored answer and the ``api.*`` audit entry with the client
address), and answers the result; device commands then show their status, polled until the
meter confirms or the command fails.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from meterdesk.access.model import Permission, PermissionDeniedError
from meterdesk.api.deps import AccountsWriter, Caller, Cashier, MetersWriter, Reader
from meterdesk.api.routers import accounts as accounts_api
from meterdesk.api.routers import commands as commands_api
from meterdesk.api.routers import money
from meterdesk.api.schemas.accounts import MoneyIn, TariffChangeIn
from meterdesk.api.schemas.commands import CommandIn, TakeBackIn
from meterdesk.api.schemas.common import Id
from meterdesk.devices.commands import service as commands
from meterdesk.reports import room_detail
from meterdesk.reports.tariff_choices import tariff_choices
from meterdesk.shared.errors import NotFoundError, ValidationError
from meterdesk.web.forms import blank_to_none, build
from meterdesk.web.routes.common import ROOM_CHANGED, answer_of, new_key, page
from meterdesk.web.routes.room import held_quantity

router = APIRouter(include_in_schema=False)
Key = Annotated[str, Form(min_length=8, max_length=100)]

DIALOGS: dict[str, tuple[Permission, str]] = {
    "recharge": (Permission.MONEY_WRITE, "dialogs/money.html"),
    "refund": (Permission.MONEY_WRITE, "dialogs/money.html"),
    "take_back": (Permission.MONEY_WRITE, "dialogs/take_back.html"),
    "relay_trip": (Permission.METERS_WRITE, "dialogs/command.html"),
    "relay_close": (Permission.METERS_WRITE, "dialogs/command.html"),
    "valve_close": (Permission.METERS_WRITE, "dialogs/command.html"),
    "valve_open": (Permission.METERS_WRITE, "dialogs/command.html"),
    "policy": (Permission.ACCOUNTS_WRITE, "dialogs/policy.html"),
    "tariff": (Permission.ACCOUNTS_WRITE, "dialogs/tariff.html"),
}
COMMAND_KINDS = ("relay_trip", "relay_close", "valve_close", "valve_open")
FINISHED = ("confirmed", "failed", "cancelled")


def room_state(caller: Caller, room_id: int) -> dict[str, Any]:
    with caller.db.read() as conn:
        account = room_detail.room_account(conn, caller.organisation_id, room_id)
        return {
            "room": room_detail.room_header(conn, caller.organisation_id, room_id),
            "account": account,
            # A quantity account's alarm amounts are quantities: the policy dialog says so.
            "quantity": held_quantity(conn, account),
            "meters": room_detail.room_meters(conn, caller.organisation_id, room_id),
            "choices": room_detail.policy_choices(conn, caller.organisation_id),
        }


def require_account(state: dict[str, Any]) -> room_detail.AccountView:
    account = state["account"]
    if account is None:
        raise NotFoundError(f"room {state['room'].name} has no open account")
    assert isinstance(account, room_detail.AccountView)
    return account


@router.get("/rooms/{room_id}/dialog/{action}", response_class=HTMLResponse)
def dialog(room_id: Id, action: str, request: Request, caller: Reader) -> HTMLResponse:
    if action not in DIALOGS:
        raise NotFoundError(f"action {action!r} not found")
    permission, template = DIALOGS[action]
    if permission not in caller.principal.permissions():
        raise PermissionDeniedError(f"your role may not do this ({permission.value})")
    state = room_state(caller, room_id)
    if action != "policy" and not action.startswith(("relay", "valve")):
        require_account(state)
    context = {**state, "action": action, "key": new_key(), "tz": state["room"].timezone}
    if action == "tariff":
        context["options"] = _tariff_options(caller, state)
    return page(request, caller, template, context)


def _tariff_options(caller: Caller, state: dict[str, Any]) -> list[Any]:
    with caller.db.read() as conn:
        return tariff_choices(
            conn,
            organisation_id=caller.organisation_id,
            account_id=require_account(state).id,
            meter_ids=[m.id for m in state["meters"]],
        )


def result(request: Request, caller: Caller, context: dict[str, Any]) -> HTMLResponse:
    return page(
        request,
        caller,
        "partials/action_result.html",
        context,
        headers={"HX-Trigger": ROOM_CHANGED},
    )


@router.post("/rooms/{room_id}/money/{kind}", response_class=HTMLResponse)
def move_money(
    room_id: Id,
    kind: str,
    request: Request,
    caller: Cashier,
    amount: Annotated[str, Form(max_length=20)],
    idempotency_key: Key,
    method: Annotated[str, Form(max_length=20)] = "cash",
    reference: Annotated[str | None, Form(max_length=200)] = None,
) -> HTMLResponse:
    if kind not in ("recharge", "refund"):
        raise NotFoundError(f"{kind!r} not found")
    account = require_account(room_state(caller, room_id))
    body = build(MoneyIn, amount=amount.strip(), method=method, reference=blank_to_none(reference))
    handler = money.recharge if kind == "recharge" else money.refund
    answer = answer_of(handler(account.id, body, request, caller, idempotency_key))
    return result(request, caller, {"kind": kind, "answer": answer, "account": account})


@router.post("/rooms/{room_id}/tariff", response_class=HTMLResponse)
def change_tariff(
    room_id: Id,
    request: Request,
    caller: AccountsWriter,
    meter_id: Annotated[int, Form()],
    tariff_id: Annotated[int, Form()],
    idempotency_key: Key,
) -> HTMLResponse:
    """改电价 through the API's own handler (idempotent, ``api.account.tariff_change`` audit)."""
    state = room_state(caller, room_id)
    account = require_account(state)
    meter = next((m for m in state["meters"] if m.id == meter_id), None)
    if meter is None:
        raise NotFoundError(f"meter {meter_id} not found in this room")
    body = build(TariffChangeIn, tariff_id=tariff_id)
    answer = answer_of(
        accounts_api.change_meter_tariff(
            account.id, meter_id, body, request, caller, idempotency_key
        )
    )
    return result(request, caller, {"kind": "tariff", "answer": answer, "meter": meter})


@router.post("/rooms/{room_id}/command", response_class=HTMLResponse)
def send_command(
    room_id: Id,
    request: Request,
    caller: MetersWriter,
    meter_id: Annotated[int, Form()],
    kind: Annotated[str, Form(max_length=30)],
    idempotency_key: Key,
) -> HTMLResponse:
    if kind not in COMMAND_KINDS:
        raise ValidationError(f"kind: {kind!r} is not one of {', '.join(COMMAND_KINDS)}")
    meters = room_state(caller, room_id)["meters"]
    meter = next((m for m in meters if m.id == meter_id), None)
    if meter is None:
        raise NotFoundError(f"meter {meter_id} not found in this room")
    body = build(CommandIn, kind=kind)
    answer = answer_of(commands_api.send_command(meter_id, body, request, caller, idempotency_key))
    return result(request, caller, {"kind": kind, "answer": answer, "meter": meter})


@router.post("/rooms/{room_id}/take-back", response_class=HTMLResponse)
def take_back(
    room_id: Id,
    request: Request,
    caller: Cashier,
    meter_id: Annotated[int, Form()],
    idempotency_key: Key,
    amount: Annotated[str | None, Form(max_length=20)] = None,
    take_all: Annotated[bool, Form(alias="all")] = False,
) -> HTMLResponse:
    """退电 from a meter-billing room through the API's own handler (``money.write``,
    idempotent, ``api.money.take_back`` audit); the result polls the command's status."""
    state = room_state(caller, room_id)
    require_account(state)
    meter = next((m for m in state["meters"] if m.id == meter_id), None)
    if meter is None:
        raise NotFoundError(f"meter {meter_id} not found in this room")
    body = build(TakeBackIn, amount=None if take_all else blank_to_none(amount), all=take_all)
    answer = answer_of(
        commands_api.take_back_money(meter_id, body, request, caller, idempotency_key)
    )
    return result(request, caller, {"kind": "take_back", "answer": answer, "meter": meter})


@router.get("/commands/{command_id}/status", response_class=HTMLResponse)
def command_status(command_id: Id, request: Request, caller: Reader) -> HTMLResponse:
    """A command's status; the fragment polls itself until the command is finished."""
    found = commands.command_log(
        caller.db, organisation_id=caller.organisation_id, command_id=command_id
    )
    finished = found.command.status in FINISHED
    headers = (
        {"HX-Trigger": ROOM_CHANGED} if finished and request.headers.get("HX-Request") else None
    )
    context = {"command": found.command, "events": found.events, "finished": finished}
    return page(request, caller, "partials/command_status.html", context, headers=headers)
