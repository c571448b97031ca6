"""Meters and gateways with their online state and last contact, for the console's lists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, or_, select

from meterdesk.devices.tables import buses, commands, device_status, gateways
from meterdesk.metering.tables import meters
from meterdesk.sites.tables import rooms

CONNECTIONS = ("online", "lost", "unknown")


@dataclass(frozen=True)
class MeterFilter:
    q: str | None = None
    connection: str | None = None  # online | lost | unknown
    utility: str | None = None


def _meters_query(organisation_id: int, where: MeterFilter) -> Any:
    state = func.coalesce(device_status.c.state, "unknown")
    query = (
        select(
            meters.c.id,
            meters.c.number,
            meters.c.utility,
            meters.c.kind,
            meters.c.protocol,
            meters.c.address,
            rooms.c.id.label("room_id"),
            rooms.c.name.label("room"),
            gateways.c.name.label("gateway"),
            state.label("connection"),
            device_status.c.last_seen_at,
            device_status.c.relay,
            device_status.c.valve,
            device_status.c.last_error,
        )
        .select_from(
            meters.outerjoin(rooms, rooms.c.id == meters.c.room_id)
            .outerjoin(device_status, device_status.c.meter_id == meters.c.id)
            .outerjoin(buses, buses.c.id == meters.c.bus_id)
            .outerjoin(gateways, gateways.c.id == buses.c.gateway_id)
        )
        .where(meters.c.organisation_id == organisation_id)
    )
    if where.q:
        pattern = f"%{where.q.strip()}%"
        query = query.where(or_(meters.c.number.ilike(pattern), rooms.c.name.ilike(pattern)))
    if where.connection in CONNECTIONS:
        query = query.where(state == where.connection)
    if where.utility in ("electricity", "water"):
        query = query.where(meters.c.utility == where.utility)
    return query


def meter_page(
    conn: Connection, organisation_id: int, where: MeterFilter, *, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of meters (by number) and how many match in all."""
    query = _meters_query(organisation_id, where)
    total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = conn.execute(query.order_by(meters.c.number).offset(offset).limit(limit)).mappings()
    return [dict(row) for row in rows], int(total)


def connection_counts(conn: Connection, organisation_id: int) -> dict[str, int]:
    state = func.coalesce(device_status.c.state, "unknown")
    rows = conn.execute(
        select(state, func.count())
        .select_from(meters.outerjoin(device_status, device_status.c.meter_id == meters.c.id))
        .where(meters.c.organisation_id == organisation_id)
        .group_by(state)
    ).all()
    counts = dict.fromkeys(CONNECTIONS, 0)
    counts.update({str(name): int(count) for name, count in rows})
    return counts


def gateway_rows(conn: Connection, organisation_id: int) -> list[dict[str, Any]]:
    meter_count = (
        select(func.count(meters.c.id))
        .join(buses, buses.c.id == meters.c.bus_id)
        .where(buses.c.gateway_id == gateways.c.id)
        .scalar_subquery()
    )
    rows = conn.execute(
        select(
            gateways.c.id,
            gateways.c.serial,
            gateways.c.name,
            gateways.c.uplink,
            gateways.c.host,
            gateways.c.port,
            gateways.c.state,
            gateways.c.last_seen_at,
            meter_count.label("meters"),
        )
        .where(gateways.c.organisation_id == organisation_id)
        .order_by(gateways.c.name)
    ).mappings()
    return [dict(row) for row in rows]


def command_counts(conn: Connection, organisation_id: int) -> dict[str, int]:
    rows = conn.execute(
        select(commands.c.status, func.count())
        .where(commands.c.organisation_id == organisation_id)
        .group_by(commands.c.status)
    ).all()
    return {str(status): int(count) for status, count in rows}
