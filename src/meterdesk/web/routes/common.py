"""Small helpers the console's routes share."""

from __future__ import annotations

import json
import uuid
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from meterdesk.api.deps import Caller
from meterdesk.sites.tables import organisations, sites
from meterdesk.web.render import render

ROOM_CHANGED = "room-changed"


def new_key() -> str:
    """A fresh idempotency key for one form: submitting it twice does the work once."""
    return uuid.uuid4().hex


def answer_of(response: Response) -> dict[str, Any]:
    """The JSON body of an API route's answer."""
    body = bytes(response.body)
    found = json.loads(body) if body else {}
    assert isinstance(found, dict)
    return found


def org_zone(caller: Caller) -> ZoneInfo:
    with caller.db.read() as conn:
        name = conn.execute(
            select(organisations.c.timezone).where(organisations.c.id == caller.organisation_id)
        ).scalar_one()
    return ZoneInfo(str(name))


def org_sites(caller: Caller) -> list[dict[str, Any]]:
    with caller.db.read() as conn:
        rows = conn.execute(
            select(sites.c.id, sites.c.name, sites.c.timezone)
            .where(sites.c.organisation_id == caller.organisation_id)
            .order_by(sites.c.id)
        ).mappings()
        return [dict(row) for row in rows]


def page(
    request: Request,
    caller: Caller,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """A console page or fragment for a logged-in caller."""
    values = {"tz": context.get("tz") or org_zone(caller), **context}
    return render(
        request, template, values, who=caller.principal, status_code=status_code, headers=headers
    )


def int_or_none(value: str | None) -> int | None:
    """A query parameter that may be empty (a select's "all" option)."""
    if value is None or not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        return None
