"""Choices for opening an account (开户): rooms without an open account, a room's meters that
no open account uses, tariffs, and customers found by name or phone."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, exists, select

from meterdesk.billing.tables import accounts, meter_assignments
from meterdesk.metering.tables import meters
from meterdesk.sites.search import customer_matches
from meterdesk.sites.tables import buildings, customers, floors, rooms
from meterdesk.tariffs.tables import tariffs


def _pattern(text: str) -> str:
    escaped = text.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def vacant_rooms(
    conn: Connection, organisation_id: int, q: str | None, limit: int = 200
) -> list[dict[str, Any]]:
    occupied = exists().where(accounts.c.room_id == rooms.c.id, accounts.c.status == "open")
    query = (
        select(
            rooms.c.id,
            rooms.c.name,
            buildings.c.name.label("building"),
            floors.c.name.label("floor"),
        )
        .join(floors, floors.c.id == rooms.c.floor_id)
        .join(buildings, buildings.c.id == floors.c.building_id)
        .where(rooms.c.organisation_id == organisation_id, ~occupied)
        .order_by(buildings.c.name, floors.c.level, rooms.c.name)
        .limit(limit)
    )
    if q and q.strip():
        query = query.where(rooms.c.name.like(_pattern(q), escape="\\"))
    return [dict(row) for row in conn.execute(query).mappings()]


def free_meters(conn: Connection, organisation_id: int, room_id: int) -> list[dict[str, Any]]:
    """The room's meters that no open account uses."""
    used = exists().where(
        meter_assignments.c.meter_id == meters.c.id, meter_assignments.c.end_at.is_(None)
    )
    rows = conn.execute(
        select(meters.c.id, meters.c.number, meters.c.utility, meters.c.kind)
        .where(meters.c.organisation_id == organisation_id, meters.c.room_id == room_id, ~used)
        .order_by(meters.c.utility, meters.c.number)
    ).mappings()
    return [dict(row) for row in rows]


def tariff_options(conn: Connection, organisation_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(tariffs.c.id, tariffs.c.name, tariffs.c.utility)
        .where(tariffs.c.organisation_id == organisation_id)
        .order_by(tariffs.c.utility, tariffs.c.name)
    ).mappings()
    return [dict(row) for row in rows]


def find_customers(
    conn: Connection, organisation_id: int, q: str | None, limit: int = 20
) -> list[dict[str, Any]]:
    if not q or not q.strip():
        return []
    rows = conn.execute(
        select(customers.c.id, customers.c.name, customers.c.phone)
        .where(customers.c.organisation_id == organisation_id, customer_matches(q))
        .order_by(customers.c.name)
        .limit(limit)
    ).mappings()
    return [dict(row) for row in rows]


def room_name(conn: Connection, organisation_id: int, room_id: int) -> str | None:
    found = conn.execute(
        select(rooms.c.name).where(
            and_(rooms.c.id == room_id, rooms.c.organisation_id == organisation_id)
        )
    ).scalar_one_or_none()
    return None if found is None else str(found)


def customer_name(conn: Connection, organisation_id: int, customer_id: int) -> str | None:
    found = conn.execute(
        select(customers.c.name).where(
            customers.c.id == customer_id, customers.c.organisation_id == organisation_id
        )
    ).scalar_one_or_none()
    return None if found is None else str(found)
