"""System notices in the console (系统通知): a form to tell the tenants of the whole
organisation, a site, a building, a floor or some rooms something, at once or at a chosen time,
and the list of notices with each one's scheduled time, delivery counts and a cancel button.

Sending and cancelling go through the API's own handlers (``send_notice``, ``cancel_notice``):
the same role check, validation, idempotency key store and audit entries. An error is shown in
the form, which keeps what was typed; a notice sent or cancelled replaces the panel with a fresh
form (and a fresh key) and the list. The form's time (``datetime-local``, no zone) is the wall
time of the chosen place's site, as on the CLI.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from meterdesk.api.deps import Caller, NotificationsWriter, Reader
from meterdesk.api.routers import notices as api
from meterdesk.api.schemas.common import BigId
from meterdesk.api.schemas.notices import NoticeIn
from meterdesk.notifications import notice_model, notices
from meterdesk.notifications.model import PERSON_CHANNELS, Channel
from meterdesk.shared.errors import ValidationError
from meterdesk.sites.tables import buildings, floors, rooms, sites
from meterdesk.web.forms import blank_to_none, build
from meterdesk.web.routes.common import answer_of, int_or_none, new_key, page

router = APIRouter(include_in_schema=False)
LISTED = 50
CHANNELS = tuple(c.value for c in Channel if c in PERSON_CHANNELS)
SCOPES = ("organisation", "site", "building", "floor", "rooms")


def _places(caller: Caller) -> dict[str, list[dict[str, Any]]]:
    """The sites, buildings and floors to choose from, named by their path."""
    org = caller.organisation_id
    with caller.db.read() as conn:
        found_sites = conn.execute(
            select(sites.c.id, sites.c.name.label("path"))
            .where(sites.c.organisation_id == org)
            .order_by(sites.c.name)
        ).mappings()
        found_buildings = conn.execute(
            select(buildings.c.id, (sites.c.name + " / " + buildings.c.name).label("path"))
            .join(sites, sites.c.id == buildings.c.site_id)
            .where(buildings.c.organisation_id == org)
            .order_by(sites.c.name, buildings.c.name)
        ).mappings()
        places = {"sites": [dict(r) for r in found_sites]}
        places["buildings"] = [dict(r) for r in found_buildings]
        found_floors = conn.execute(
            select(
                floors.c.id,
                (sites.c.name + " / " + buildings.c.name + " / " + floors.c.name).label("path"),
            )
            .join(buildings, buildings.c.id == floors.c.building_id)
            .join(sites, sites.c.id == buildings.c.site_id)
            .where(floors.c.organisation_id == org)
            .order_by(sites.c.name, buildings.c.name, floors.c.level, floors.c.name)
        ).mappings()
        places["floors"] = [dict(r) for r in found_floors]
    return places


def _room_ids(caller: Caller, text: str | None) -> list[int]:
    """Rooms by their names ("B-101, B-102"): each must name exactly one room of the
    organisation (a name on two floors is ambiguous: choose the floor instead)."""
    names = [n.strip() for n in (text or "").replace("，", ",").replace("\n", ",").split(",")]
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise ValidationError("rooms: give one or more room numbers, separated by commas")
    with caller.db.read() as conn:
        rows = conn.execute(
            select(rooms.c.id, rooms.c.name).where(
                rooms.c.organisation_id == caller.organisation_id, rooms.c.name.in_(names)
            )
        ).all()
    found: dict[str, list[int]] = {}
    for row in rows:
        found.setdefault(str(row.name), []).append(int(row.id))
    for name in names:
        if name not in found:
            raise ValidationError(f"rooms: no room {name!r}")
        if len(found[name]) > 1:
            raise ValidationError(f"rooms: {name!r} is on several floors: send to its floor")
    return [found[name][0] for name in names]


def _named(
    caller: Caller, found: list[dict[str, Any]], places: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Each notice with the names of the places it went to (its ids are what is stored)."""
    paths = {
        kind: {int(p["id"]): str(p["path"]) for p in places[f"{kind}s"]}
        for kind in ("site", "building", "floor")
    }
    wanted = {i for n in found if n["scope_kind"] == "rooms" for i in n["scope_ids"]}
    with caller.db.read() as conn:
        paths["rooms"] = {
            int(row.id): str(row.name)
            for row in conn.execute(select(rooms.c.id, rooms.c.name).where(rooms.c.id.in_(wanted)))
        }
    return [
        {
            **n,
            "scope_names": [paths.get(n["scope_kind"], {}).get(i, f"#{i}") for i in n["scope_ids"]],
        }
        for n in found
    ]


def _panel(
    caller: Caller, sent: dict[str, Any] | None = None, cancelled: dict[str, Any] | None = None
) -> dict[str, Any]:
    places = _places(caller)
    found = notices.list_notices(caller.db, organisation_id=caller.organisation_id, limit=LISTED)
    return {
        "notices": _named(caller, found, places),
        "places": places,
        "scopes": SCOPES,
        "channels": CHANNELS,
        "key": new_key(),
        "sent": sent,
        "cancelled": cancelled,
        "nav": "notices",
    }


@router.get("/notices", response_class=HTMLResponse)
def notices_page(request: Request, caller: Reader) -> HTMLResponse:
    return page(request, caller, "notices.html", _panel(caller))


@router.post("/notices", response_class=HTMLResponse)
def send(
    request: Request,
    caller: NotificationsWriter,
    idempotency_key: Annotated[str, Form(min_length=8, max_length=80)],
    scope: Annotated[str, Form(max_length=20)] = "",
    site_id: Annotated[str | None, Form(max_length=12)] = None,
    building_id: Annotated[str | None, Form(max_length=12)] = None,
    floor_id: Annotated[str | None, Form(max_length=12)] = None,
    room_names: Annotated[str | None, Form(max_length=5000)] = None,
    subject: Annotated[str, Form(max_length=200)] = "",
    text: Annotated[str, Form(max_length=2000)] = "",
    urgent: Annotated[str | None, Form(max_length=5)] = None,
    channels: Annotated[list[str] | None, Form()] = None,
    send_at: Annotated[str | None, Form(max_length=40)] = None,
) -> HTMLResponse:
    chosen = {"site": site_id, "building": building_id, "floor": floor_id}
    if scope == "rooms":
        ids = _room_ids(caller, room_names)
    elif scope in chosen:
        place = int_or_none(chosen[scope])
        if place is None:
            raise ValidationError(f"{scope}: choose one")
        ids = [place]
    else:
        ids = []
    when = None
    if blank_to_none(send_at):
        tz = notices.scope_zone(caller.db, caller.organisation_id, notice_model.scope(scope, ids))
        when = notice_model.local_send_at(str(send_at), tz).isoformat()
    body = build(
        NoticeIn,
        scope=scope,
        ids=ids,
        subject=subject,
        text=text,
        urgent=urgent == "on",
        channels=[c for c in channels or [] if blank_to_none(c)] or None,
        send_at=when,
    )
    answer = answer_of(api.send_notice(body, request, caller, f"{idempotency_key}:notice"))
    return page(request, caller, "partials/notice_panel.html", _panel(caller, sent=answer))


@router.post("/notices/{notice_id}/cancel", response_class=HTMLResponse)
def cancel(
    notice_id: BigId,
    request: Request,
    caller: NotificationsWriter,
    idempotency_key: Annotated[str, Form(min_length=8, max_length=100)],
) -> HTMLResponse:
    key = f"{idempotency_key}:notice-cancel:{notice_id}"
    answer = answer_of(api.cancel_notice(notice_id, request, caller, key))
    return page(request, caller, "partials/notice_panel.html", _panel(caller, cancelled=answer))
