"""Room detail (F-MON-ROOM): live values, today's energy and money, the balance over 30 days,
readings, commands with their results, alarms and orders. A quantity account (购量) shows the
kWh or m³ it has left, the lots it bought and their prices beside its wallet money. The status and activity panels are
fragments that refresh by themselves (htmx) and after every action on the room."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Connection

from meterdesk.api.deps import Caller, Reader
from meterdesk.api.schemas.common import Id
from meterdesk.billing import quantity, statements
from meterdesk.devices.commands import service as commands
from meterdesk.reports import room_detail
from meterdesk.shared.time import local_date, local_midnight
from meterdesk.web.routes.common import page

router = APIRouter(include_in_schema=False)
CHART_DAYS = 30


def _status(caller: Caller, room_id: int) -> dict[str, Any]:
    with caller.db.read() as conn:
        header = room_detail.room_header(conn, caller.organisation_id, room_id)
        account = room_detail.room_account(conn, caller.organisation_id, room_id)
        meters = room_detail.room_meters(conn, caller.organisation_id, room_id)
        tz = ZoneInfo(header.timezone)
        now = caller.db.clock()
        start = local_midnight(local_date(now, tz), tz)
        room_detail.add_usage(conn, meters, start, now)
        room_detail.add_drift(conn, account, meters)
        held = held_quantity(conn, account)
    return {
        "room": header,
        "account": account,
        "quantity": held,
        "meters": meters,
        "tz": tz,
        "now": now,
    }


def held_quantity(
    conn: Connection, account: room_detail.AccountView | None
) -> quantity.QuantityView | None:
    """What a quantity account (购量) holds; None for a money account or no account."""
    if account is None or not quantity.is_quantity(conn, account.id):
        return None
    return quantity.view(conn, account.id)


def _activity(caller: Caller, status: dict[str, Any]) -> dict[str, Any]:
    meter_ids = [m.id for m in status["meters"]]
    found: list[commands.CommandView] = []
    for meter_id in meter_ids:
        found += commands.list_commands(
            caller.db, organisation_id=caller.organisation_id, meter_id=meter_id, limit=10
        )
    found.sort(key=lambda c: c.id, reverse=True)
    account = status["account"]
    with caller.db.read() as conn:
        readings = room_detail.recent_readings(conn, meter_ids)
        orders = [] if account is None else room_detail.orders(conn, account.id)
    return {"commands": found[:12], "readings": readings, "orders": orders}


def _chart(caller: Caller, account: room_detail.AccountView | None, now: datetime) -> str:
    if account is None:
        return "[]"
    start = now - timedelta(days=CHART_DAYS)
    if account.opened_at is not None and account.opened_at > start:
        start = account.opened_at  # a younger account's chart has no flat zero before it opened
    found = statements.statement(
        caller.db,
        organisation_id=caller.organisation_id,
        number=account.number,
        start=start,
        end=now,
    )
    lines = [(found.start, found.opening_balance)]
    lines += [(line.at, line.balance_after) for line in found.lines]
    lines.append((now, found.closing_balance))
    return json.dumps(room_detail.balance_points(lines))


@router.get("/rooms/{room_id}", response_class=HTMLResponse)
def room_page(room_id: Id, request: Request, caller: Reader) -> HTMLResponse:
    status = _status(caller, room_id)
    context = {
        **status,
        **_activity(caller, status),
        "chart": _chart(caller, status["account"], status["now"]),
        "nav": "rooms",
    }
    return page(request, caller, "room.html", context)


@router.get("/rooms/{room_id}/status", response_class=HTMLResponse)
def room_status(room_id: Id, request: Request, caller: Reader) -> HTMLResponse:
    return page(request, caller, "partials/room_status.html", _status(caller, room_id))


@router.get("/rooms/{room_id}/activity", response_class=HTMLResponse)
def room_activity(room_id: Id, request: Request, caller: Reader) -> HTMLResponse:
    status = _status(caller, room_id)
    return page(
        request, caller, "partials/room_activity.html", {**status, **_activity(caller, status)}
    )
