"""Meters and gateways with their online state and last contact, for the console's lists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, case, func, or_, select

from meterdesk.billing import supply_drift
from meterdesk.devices.tables import buses, commands, device_status, gateways
from meterdesk.metering.tables import meters
from meterdesk.sites.tables import rooms

CONNECTIONS = ("online", "lost", "unknown")


@dataclass(frozen=True)
class MeterFilter:
    q: str | None = None
    connection: str | None = None  # online | lost | unknown
    utility: str | None = None
    drift: bool = False  # only meters whose relay or valve disagrees with the account's decision


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
        # LIKE's own wildcards escaped: a search for "E_101" matched "EX101", "%" everything
        text = where.q.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{text}%"
        query = query.where(
            or_(
                meters.c.number.ilike(pattern, escape="\\"),
                rooms.c.name.ilike(pattern, escape="\\"),
            )
        )
    if where.connection in CONNECTIONS:
        query = query.where(state == where.connection)
    if where.utility in ("electricity", "water"):
        query = query.where(meters.c.utility == where.utility)
    if where.drift:
        query = query.where(meters.c.id.in_(supply_drift.disagreeing_meter_ids()))
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


def drift_count(conn: Connection, organisation_id: int) -> int:
    """Meters whose relay or valve disagrees with their account's decision (supply drift)."""
    return int(
        conn.execute(
            select(func.count()).where(
                meters.c.organisation_id == organisation_id,
                meters.c.id.in_(supply_drift.disagreeing_meter_ids()),
            )
        ).scalar_one()
    )


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


def gateway_query(organisation_id: int) -> Any:
    meter_count = (
        select(func.count(meters.c.id))
        .join(buses, buses.c.id == meters.c.bus_id)
        .where(buses.c.gateway_id == gateways.c.id)
        .scalar_subquery()
    )
    return select(gateways, meter_count.label("meters")).where(
        gateways.c.organisation_id == organisation_id
    )


def gateway_list(conn: Connection, organisation_id: int) -> list[dict[str, Any]]:
    """Every gateway with its state, last contact and how many meters its buses carry (by id)."""
    rows = conn.execute(gateway_query(organisation_id).order_by(gateways.c.id)).mappings()
    return [dict(row) for row in rows]


def gateway_one(conn: Connection, organisation_id: int, gateway_id: int) -> dict[str, Any] | None:
    row = (
        conn.execute(gateway_query(organisation_id).where(gateways.c.id == gateway_id))
        .mappings()
        .one_or_none()
    )
    return None if row is None else dict(row)


def bus_query(organisation_id: int) -> Any:
    state = func.coalesce(device_status.c.state, "unknown")
    counted = (
        select(
            meters.c.bus_id,
            func.count(meters.c.id).label("meters"),
            func.sum(case((state == "online", 1), else_=0)).label("online"),
            func.sum(case((state == "lost", 1), else_=0)).label("lost"),
            func.max(device_status.c.last_seen_at).label("last_seen_at"),
        )
        .select_from(meters.outerjoin(device_status, device_status.c.meter_id == meters.c.id))
        .where(meters.c.bus_id.is_not(None))
        .group_by(meters.c.bus_id)
        .subquery()
    )
    return (
        select(
            buses,
            func.coalesce(counted.c.meters, 0).label("meters"),
            func.coalesce(counted.c.online, 0).label("online"),
            func.coalesce(counted.c.lost, 0).label("lost"),
            counted.c.last_seen_at,
        )
        .outerjoin(counted, counted.c.bus_id == buses.c.id)
        .where(buses.c.organisation_id == organisation_id)
    )


def bus_list(
    conn: Connection, organisation_id: int, gateway_id: int | None = None
) -> list[dict[str, Any]]:
    """Every bus with how many of its meters are online or lost and their latest contact."""
    query = bus_query(organisation_id)
    if gateway_id is not None:
        query = query.where(buses.c.gateway_id == gateway_id)
    return [dict(row) for row in conn.execute(query.order_by(buses.c.id)).mappings()]


def bus_one(conn: Connection, organisation_id: int, bus_id: int) -> dict[str, Any] | None:
    query = bus_query(organisation_id).where(buses.c.id == bus_id)
    row = conn.execute(query).mappings().one_or_none()
    return None if row is None else dict(row)


def meter_connections(
    conn: Connection,
    organisation_id: int,
    *,
    bus_id: int | None = None,
    meter_id: int | None = None,
) -> list[dict[str, Any]]:
    """What the platform last saw of each meter (on one bus, or one meter), by number."""
    query = (
        select(
            meters.c.id.label("meter_id"),
            meters.c.number,
            meters.c.bus_id,
            meters.c.address,
            func.coalesce(device_status.c.state, "unknown").label("state"),
            device_status.c.last_seen_at,
            device_status.c.last_error,
            func.coalesce(device_status.c.failures, 0).label("failures"),
            device_status.c.relay,
            device_status.c.valve,
            device_status.c.protected,
            device_status.c.remaining_money,
            device_status.c.purchase_count,
            device_status.c.live,
            device_status.c.updated_at,
        )
        .outerjoin(device_status, device_status.c.meter_id == meters.c.id)
        .where(meters.c.organisation_id == organisation_id)
        .order_by(meters.c.number)
    )
    if bus_id is not None:
        query = query.where(meters.c.bus_id == bus_id)
    if meter_id is not None:
        query = query.where(meters.c.id == meter_id)
    return [dict(row) for row in conn.execute(query).mappings()]
