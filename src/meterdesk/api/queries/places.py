"""Sites, buildings, floors, rooms and customers of one organisation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, RowMapping, Table, select

from meterdesk.api.queries.common import Window, like, page
from meterdesk.shared.errors import NotFoundError
from meterdesk.sites.search import customer_matches
from meterdesk.sites.tables import buildings, customers, floors, rooms, sites


def one(conn: Connection, table: Table, organisation_id: int, row_id: int, what: str) -> RowMapping:
    row = (
        conn.execute(
            select(table).where(table.c.id == row_id, table.c.organisation_id == organisation_id)
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFoundError(f"{what} {row_id} not found")
    return row


def list_sites(
    conn: Connection, organisation_id: int, window: Window
) -> tuple[Sequence[RowMapping], str | None]:
    query = select(sites).where(sites.c.organisation_id == organisation_id)
    return page(conn, query, sites.c.id, after=window.after, limit=window.limit)


def list_buildings(
    conn: Connection, organisation_id: int, site_id: int | None, window: Window
) -> tuple[Sequence[RowMapping], str | None]:
    query = select(buildings).where(buildings.c.organisation_id == organisation_id)
    if site_id is not None:
        query = query.where(buildings.c.site_id == site_id)
    return page(conn, query, buildings.c.id, after=window.after, limit=window.limit)


def list_floors(
    conn: Connection, organisation_id: int, building_id: int | None, window: Window
) -> tuple[Sequence[RowMapping], str | None]:
    query = select(floors).where(floors.c.organisation_id == organisation_id)
    if building_id is not None:
        query = query.where(floors.c.building_id == building_id)
    return page(conn, query, floors.c.id, after=window.after, limit=window.limit)


_ROOM_COLUMNS = (
    rooms,
    floors.c.building_id,
    buildings.c.site_id,
    sites.c.name.label("site"),
    buildings.c.name.label("building"),
    floors.c.name.label("floor"),
)


def _rooms_query(organisation_id: int) -> Any:
    return (
        select(*_ROOM_COLUMNS)
        .select_from(rooms.join(floors).join(buildings).join(sites))
        .where(rooms.c.organisation_id == organisation_id)
    )


@dataclass(frozen=True)
class RoomFilter:
    site_id: int | None = None
    building_id: int | None = None
    floor_id: int | None = None
    kind: str | None = None
    q: str | None = None


def list_rooms(
    conn: Connection, organisation_id: int, where: RoomFilter, window: Window
) -> tuple[Sequence[RowMapping], str | None]:
    query = _rooms_query(organisation_id)
    conditions = (
        (where.site_id, buildings.c.site_id),
        (where.building_id, floors.c.building_id),
        (where.floor_id, rooms.c.floor_id),
        (where.kind, rooms.c.kind),
    )
    for value, column in conditions:
        if value is not None:
            query = query.where(column == value)
    if where.q:
        query = query.where(rooms.c.name.like(like(where.q), escape="\\"))
    return page(conn, query, rooms.c.id, after=window.after, limit=window.limit)


def one_room(conn: Connection, organisation_id: int, room_id: int) -> RowMapping:
    row = (
        conn.execute(_rooms_query(organisation_id).where(rooms.c.id == room_id)).mappings().first()
    )
    if row is None:
        raise NotFoundError(f"room {room_id} not found")
    return row


def list_customers(
    conn: Connection, organisation_id: int, q: str | None, window: Window
) -> tuple[Sequence[RowMapping], str | None]:
    query = select(customers).where(customers.c.organisation_id == organisation_id)
    if q:
        query = query.where(customer_matches(q))
    return page(conn, query, customers.c.id, after=window.after, limit=window.limit)
