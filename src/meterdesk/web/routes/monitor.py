"""房间监控 — the room-monitoring page (F-MON-GRID): building → floor tree, a tile (or, on small
screens, a dense row) per room, filters, search and counts per state.

The database counts and pages the rooms (``reports.room_grid``); the page shows
:data:`PAGE_SIZE` rooms at a time, a page past the last shows the last. An htmx request (a filter
change, a search keystroke, a page link) gets only the grid part back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from meterdesk.api.deps import Reader
from meterdesk.reports import room_grid
from meterdesk.web.routes.common import int_or_none, org_sites, page
from meterdesk.web.routes.grid_api import load

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 200
Text = Annotated[str | None, Query(max_length=64)]


@dataclass(frozen=True)
class GridQuery:
    site: int | None
    building: int | None
    floor: int | None
    state: str | None
    q: str | None
    view: str
    page: int

    def link(self, **changes: object) -> str:
        values = {**self.__dict__, "page": 1, **changes}
        shown = {k: v for k, v in values.items() if v not in (None, "", 1) or k == "view"}
        if shown.get("view") == "tiles":
            shown.pop("view")
        return "/rooms?" + urlencode(shown) if shown else "/rooms"


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/rooms", status_code=303)


@router.get("/rooms", response_class=HTMLResponse)
def rooms_page(
    request: Request,
    caller: Reader,
    site: Text = None,
    building: Text = None,
    floor: Text = None,
    state: Text = None,
    q: Text = None,
    view: Text = None,
    page_number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    query = GridQuery(
        int_or_none(site),
        int_or_none(building),
        int_or_none(floor),
        state if state in room_grid.FILTERS else None,
        (q or "").strip() or None,
        "table" if view == "table" else "tiles",
        page_number,
    )
    found = load(
        caller,
        room_grid.GridFilter(query.site, query.building, query.floor, query.state, query.q),
        lambda matched: ((min(query.page, _pages(matched)) - 1) * PAGE_SIZE, PAGE_SIZE),
    )
    context = {
        "query": query,
        "grid": found,
        "tiles": found.tiles,
        "page_number": found.offset // PAGE_SIZE + 1,
        "pages": _pages(found.matched),
        "sites": org_sites(caller),
        "filters": room_grid.FILTERS,
        "nav": "rooms",
    }
    partial = request.headers.get("HX-Target") == "grid"
    return page(request, caller, "partials/grid.html" if partial else "rooms.html", context)


def _pages(matched: int) -> int:
    return max(1, -(-matched // PAGE_SIZE))
