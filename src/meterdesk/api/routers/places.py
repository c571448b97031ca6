"""Sites, buildings, floors, rooms and customers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from meterdesk.api.deps import Caller, PlacesWriter, Reader
from meterdesk.api.errors import ERROR_RESPONSES
from meterdesk.api.pagination import Cursor, Limit, Page, after_id
from meterdesk.api.queries import places as queries
from meterdesk.api.queries.common import Window, text
from meterdesk.api.schemas.common import Id
from meterdesk.api.schemas.places import (
    BuildingIn,
    BuildingOut,
    CustomerIn,
    CustomerOut,
    CustomerPatch,
    FloorIn,
    FloorOut,
    RoomIn,
    RoomKind,
    RoomOut,
    SiteIn,
    SiteOut,
)
from meterdesk.sites import service
from meterdesk.sites.tables import buildings, customers, floors, sites

router = APIRouter(responses=ERROR_RESPONSES, tags=["places"])
Search = Annotated[str | None, Query(max_length=100, description="part of the name")]


def _window(cursor: str | None, limit: int) -> Window:
    return Window(after_id(cursor), limit)


# -- sites ---------------------------------------------------------------------------------------


def _site(caller: Caller, site_id: Id) -> SiteOut:
    with caller.db.read() as conn:
        return SiteOut.model_validate(
            queries.one(conn, sites, caller.organisation_id, site_id, "site")
        )


@router.get("/sites", response_model=Page[SiteOut])
def list_sites(caller: Reader, limit: Limit = 50, cursor: Cursor = None) -> Page[SiteOut]:
    with caller.db.read() as conn:
        rows, next_cursor = queries.list_sites(conn, caller.organisation_id, _window(cursor, limit))
    return Page[SiteOut](items=[SiteOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post("/sites", response_model=SiteOut, status_code=201)
def create_site(body: SiteIn, caller: PlacesWriter) -> SiteOut:
    site_id = service.create_site(
        caller.db, organisation_id=caller.organisation_id, name=body.name, timezone=body.timezone
    )
    return _site(caller, site_id)


@router.get("/sites/{site_id}", response_model=SiteOut)
def get_site(site_id: Id, caller: Reader) -> SiteOut:
    return _site(caller, site_id)


# -- buildings -----------------------------------------------------------------------------------


def _building(caller: Caller, building_id: Id) -> BuildingOut:
    with caller.db.read() as conn:
        row = queries.one(conn, buildings, caller.organisation_id, building_id, "building")
    return BuildingOut.model_validate(row)


@router.get("/buildings", response_model=Page[BuildingOut])
def list_buildings(
    caller: Reader, site_id: Id | None = None, limit: Limit = 50, cursor: Cursor = None
) -> Page[BuildingOut]:
    with caller.db.read() as conn:
        rows, next_cursor = queries.list_buildings(
            conn, caller.organisation_id, site_id, _window(cursor, limit)
        )
    return Page[BuildingOut](
        items=[BuildingOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.post("/buildings", response_model=BuildingOut, status_code=201)
def create_building(body: BuildingIn, caller: PlacesWriter) -> BuildingOut:
    building_id = service.create_building(
        caller.db, organisation_id=caller.organisation_id, site_id=body.site_id, name=body.name
    )
    return _building(caller, building_id)


@router.get("/buildings/{building_id}", response_model=BuildingOut)
def get_building(building_id: Id, caller: Reader) -> BuildingOut:
    return _building(caller, building_id)


# -- floors --------------------------------------------------------------------------------------


def _floor(caller: Caller, floor_id: Id) -> FloorOut:
    with caller.db.read() as conn:
        return FloorOut.model_validate(
            queries.one(conn, floors, caller.organisation_id, floor_id, "floor")
        )


@router.get("/floors", response_model=Page[FloorOut])
def list_floors(
    caller: Reader, building_id: Id | None = None, limit: Limit = 50, cursor: Cursor = None
) -> Page[FloorOut]:
    with caller.db.read() as conn:
        rows, next_cursor = queries.list_floors(
            conn, caller.organisation_id, building_id, _window(cursor, limit)
        )
    return Page[FloorOut](items=[FloorOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post("/floors", response_model=FloorOut, status_code=201)
def create_floor(body: FloorIn, caller: PlacesWriter) -> FloorOut:
    floor_id = service.create_floor(
        caller.db,
        organisation_id=caller.organisation_id,
        building_id=body.building_id,
        name=body.name,
        level=body.level,
    )
    return _floor(caller, floor_id)


@router.get("/floors/{floor_id}", response_model=FloorOut)
def get_floor(floor_id: Id, caller: Reader) -> FloorOut:
    return _floor(caller, floor_id)


# -- rooms ---------------------------------------------------------------------------------------


def _room_out(row: object) -> RoomOut:
    values = dict(row)  # type: ignore[call-overload]
    values["area_m2"] = text(values["area_m2"])
    return RoomOut.model_validate(values)


@router.get("/rooms", response_model=Page[RoomOut])
def list_rooms(
    caller: Reader,
    site_id: Id | None = None,
    building_id: Id | None = None,
    floor_id: Id | None = None,
    kind: RoomKind | None = None,
    q: Search = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[RoomOut]:
    where = queries.RoomFilter(site_id, building_id, floor_id, kind, q)
    with caller.db.read() as conn:
        rows, next_cursor = queries.list_rooms(
            conn, caller.organisation_id, where, _window(cursor, limit)
        )
    return Page[RoomOut](items=[_room_out(r) for r in rows], next_cursor=next_cursor)


@router.post("/rooms", response_model=RoomOut, status_code=201)
def create_room(body: RoomIn, caller: PlacesWriter) -> RoomOut:
    room_id = service.create_room(
        caller.db,
        organisation_id=caller.organisation_id,
        floor_id=body.floor_id,
        name=body.name,
        kind=body.kind,
        area_m2=body.area_m2,
    )
    return get_room(room_id, caller)


@router.get("/rooms/{room_id}", response_model=RoomOut)
def get_room(room_id: Id, caller: Reader) -> RoomOut:
    with caller.db.read() as conn:
        return _room_out(queries.one_room(conn, caller.organisation_id, room_id))


# -- customers -----------------------------------------------------------------------------------


def _customer(caller: Caller, customer_id: Id) -> CustomerOut:
    with caller.db.read() as conn:
        row = queries.one(conn, customers, caller.organisation_id, customer_id, "customer")
    return CustomerOut.model_validate(row)


@router.get("/customers", response_model=Page[CustomerOut])
def list_customers(
    caller: Reader, q: Search = None, limit: Limit = 50, cursor: Cursor = None
) -> Page[CustomerOut]:
    """Customers; ``q`` matches part of the name or phone."""
    with caller.db.read() as conn:
        rows, next_cursor = queries.list_customers(
            conn, caller.organisation_id, q, _window(cursor, limit)
        )
    return Page[CustomerOut](
        items=[CustomerOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.post("/customers", response_model=CustomerOut, status_code=201)
def create_customer(body: CustomerIn, caller: PlacesWriter) -> CustomerOut:
    customer_id = service.create_customer(
        caller.db,
        organisation_id=caller.organisation_id,
        name=body.name,
        phone=body.phone,
        email=body.email,
        wechat_openid=body.wechat_openid,
        wechat_mini_openid=body.wechat_mini_openid,
        language=body.language,
    )
    return _customer(caller, customer_id)


@router.patch("/customers/{customer_id}", response_model=CustomerOut)
def update_customer(customer_id: Id, body: CustomerPatch, caller: PlacesWriter) -> CustomerOut:
    """Change a customer's name, addresses, message language or ``summaries`` (false: no
    deduction summaries for this customer's accounts; audited)."""
    service.update_customer(
        caller.db,
        organisation_id=caller.organisation_id,
        customer_id=customer_id,
        change=service.CustomerChange(**body.model_dump(exclude_unset=True, exclude_none=True)),
        actor=caller.actor,
        source=caller.address[:100],
    )
    return _customer(caller, customer_id)


@router.get("/customers/{customer_id}", response_model=CustomerOut)
def get_customer(customer_id: Id, caller: Reader) -> CustomerOut:
    return _customer(caller, customer_id)
