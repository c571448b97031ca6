"""``GET /api/v1/monitor/rooms``: the room-monitoring grid as JSON (F-MON-GRID, P5) — what the
console's 房间监控 page shows, for integrations and the benchmark.

It lives beside the console for now (the console owns the read model in ``reports.room_grid``);
it is an ordinary API route: a Reader, scoped to the caller's organisation, in the OpenAPI
document.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Connection, select

from meterdesk.api.deps import Caller, Reader
from meterdesk.api.errors import ERROR_RESPONSES
from meterdesk.api.schemas.common import Id
from meterdesk.billing.quantity_show import exact
from meterdesk.db.types import int_instant
from meterdesk.reports import room_grid, room_grid_tiles
from meterdesk.shared.errors import NotFoundError
from meterdesk.shared.money import format_money, from_fen
from meterdesk.sites.tables import buildings, floors, sites

router = APIRouter(responses=ERROR_RESPONSES, tags=["monitor"])
GridState = Literal[
    "off", "arrears", "overdraft", "alarm", "normal", "vacant", "lost", "pending", "protected"
]


class RoomTileOut(BaseModel):
    room_id: int
    room: str
    kind: str
    site_id: int
    site: str
    building_id: int
    building: str
    floor_id: int
    floor: str
    account_id: int | None
    account_number: str | None
    customer: str | None
    balance: str | None
    arrears: str | None
    supply: Literal["on", "off", "pending", "none"]
    alarm_level: int
    protected: bool
    connection: Literal["online", "lost", "unknown", "none"]
    meters: int
    relay_open: bool
    valve_closed: bool
    last_seen_at: datetime | None
    state: Literal["off", "arrears", "overdraft", "alarm", "normal", "vacant"]
    quantity_left: str | None = None  # a quantity-credit account (购量): kWh or m³ left
    quantity_unit: str | None = None
    customer_id: int | None = None  # the account's customer (``GET /customers/{id}``)


class RoomGridOut(BaseModel):
    total: int  # rooms matching the place and search filters
    matched: int  # of those, rooms in the asked state
    offset: int
    limit: int
    counts: dict[str, int]  # per state, over ``total``
    items: list[RoomTileOut]


def _money(fen: int | None) -> str | None:
    return None if fen is None else format_money(from_fen(fen))


FIELDS = tuple(
    name
    for name in RoomTileOut.model_fields
    if name not in ("balance", "arrears", "last_seen_at", "quantity_left")
)


def tile_out(tile: room_grid_tiles.RoomTile) -> dict[str, Any]:
    """A tile as :class:`RoomTileOut` describes it (built as a plain dict: a page of hundreds
    of rooms is serialised without validating what the query already typed)."""
    found: dict[str, Any] = {name: getattr(tile, name) for name in FIELDS}
    found["balance"] = _money(tile.balance_fen)
    found["arrears"] = _money(tile.arrears_fen)
    found["quantity_left"] = None if tile.quantity_left is None else exact(tile.quantity_left)
    found["last_seen_at"] = (
        None if tile.last_seen_us is None else int_instant(tile.last_seen_us).isoformat()
    )
    return found


def require_places(conn: Connection, organisation_id: int, where: room_grid.GridFilter) -> None:
    """A site, building or floor of another organisation is not found."""
    for value, table, what in (
        (where.site_id, sites, "site"),
        (where.building_id, buildings, "building"),
        (where.floor_id, floors, "floor"),
    ):
        if value is None:
            continue
        found = conn.execute(
            select(table.c.id).where(
                table.c.id == value, table.c.organisation_id == organisation_id
            )
        ).first()
        if found is None:
            raise NotFoundError(f"{what} {value} not found")


def load(caller: Caller, where: room_grid.GridFilter, window: room_grid.Window) -> room_grid.Grid:
    """Counts, tree and page from one snapshot, so they agree with each other."""
    with caller.db.snapshot() as conn:
        require_places(conn, caller.organisation_id, where)
        return room_grid.grid(conn, caller.organisation_id, where, window)


@router.get("/monitor/rooms", response_model=RoomGridOut)
def room_grid_api(
    caller: Reader,
    site_id: Id | None = None,
    building_id: Id | None = None,
    floor_id: Id | None = None,
    state: GridState | None = None,
    q: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=r"^[^\x00-\x1f\x7f]*$",
            description="room, customer or account (no control characters)",
        ),
    ] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
) -> JSONResponse:
    """Every room with building, floor, tenant, balance, arrears, supply, alarm level and online
    state, in building / floor / room order; counts per state; one page of ``limit`` rooms."""
    where = room_grid.GridFilter(site_id, building_id, floor_id, state, q)
    found = load(caller, where, lambda _: (offset, limit))
    body = {
        "total": found.total,
        "matched": found.matched,
        "offset": offset,
        "limit": limit,
        "counts": found.counts,
        "items": [tile_out(tile) for tile in found.tiles],
    }
    return JSONResponse(body)
