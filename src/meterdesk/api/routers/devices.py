"""Gateways (网关), buses, where each meter answers (link / unlink), and what the platform last
saw of a meter or a bus: online / lost, last contact, relay and valve."""

from __future__ import annotations

import json

from fastapi import APIRouter

from meterdesk.api.deps import Caller, MetersWriter, Reader
from meterdesk.api.errors import ERROR_RESPONSES
from meterdesk.api.idempotency import audited
from meterdesk.api.pagination import Cursor, Limit, Page, after_id
from meterdesk.api.queries.common import page
from meterdesk.api.queries.places import one
from meterdesk.api.schemas.common import Id
from meterdesk.api.schemas.devices import (
    BusDetailOut,
    BusIn,
    BusOut,
    GatewayIn,
    GatewayOut,
    GatewayPasswordIn,
    LinkIn,
    LinkOut,
    MeterStatusOut,
)
from meterdesk.devices import service
from meterdesk.devices.tables import buses, gateways
from meterdesk.metering.tables import meters
from meterdesk.reports import devices as reports
from meterdesk.shared.errors import NotFoundError

router = APIRouter(responses=ERROR_RESPONSES, tags=["devices"])


def _gateway(caller: Caller, gateway_id: int) -> GatewayOut:
    with caller.db.read() as conn:
        found = reports.gateway_one(conn, caller.organisation_id, gateway_id)
    if found is None:
        raise NotFoundError(f"gateway {gateway_id} not found")
    return GatewayOut.model_validate(found)


def _status(row: dict[str, object]) -> MeterStatusOut:
    live = row.get("live")
    money = row.get("remaining_money")
    protected = row.get("protected")
    return MeterStatusOut.model_validate(
        {
            **row,
            "live": json.loads(live) if isinstance(live, str) else None,
            "remaining_money": None if money is None else f"{money:.2f}",
            "protected": None if protected is None else bool(protected),
        }
    )


@router.get("/gateways", response_model=Page[GatewayOut])
def list_gateways(caller: Reader, limit: Limit = 50, cursor: Cursor = None) -> Page[GatewayOut]:
    """Gateways with their state (online / lost) and last contact."""
    with caller.db.read() as conn:
        rows, next_cursor = page(
            conn,
            reports.gateway_query(caller.organisation_id),
            gateways.c.id,
            after=after_id(cursor),
            limit=limit,
        )
    return Page[GatewayOut](
        items=[GatewayOut.model_validate(dict(r)) for r in rows], next_cursor=next_cursor
    )


@router.post("/gateways", response_model=GatewayOut, status_code=201)
def create_gateway(body: GatewayIn, caller: MetersWriter) -> GatewayOut:
    """Register a gateway or transparent DTU at a site."""
    gateway_id = service.create_gateway(
        caller.db,
        organisation_id=caller.organisation_id,
        site_id=body.site_id,
        serial=body.serial,
        name=body.name or body.serial,
        uplink=body.uplink,
        host=body.host,
        port=body.port,
        product_key=body.product_key,
        access_password=body.access_password,
        actor=caller.actor,
    )
    audited(caller, action="gateway.create", subject=f"gateway:{gateway_id}")
    return _gateway(caller, gateway_id)


@router.put("/gateways/{gateway_id}/access-password", response_model=GatewayOut)
def set_gateway_password(
    gateway_id: Id, body: GatewayPasswordIn, caller: MetersWriter
) -> GatewayOut:
    """Set or change an HJ212 gateway's access password (PW); its packets are refused until
    one is set. The password is stored hashed and never returned."""
    service.set_access_password(
        caller.db,
        organisation_id=caller.organisation_id,
        gateway_id=gateway_id,
        password=body.access_password,
        actor=caller.actor,
    )
    audited(caller, action="gateway.access_password", subject=f"gateway:{gateway_id}")
    return _gateway(caller, gateway_id)


@router.get("/gateways/{gateway_id}", response_model=GatewayOut)
def get_gateway(gateway_id: Id, caller: Reader) -> GatewayOut:
    return _gateway(caller, gateway_id)


@router.get("/buses", response_model=Page[BusOut])
def list_buses(
    caller: Reader, gateway_id: Id | None = None, limit: Limit = 50, cursor: Cursor = None
) -> Page[BusOut]:
    """Buses with how many of their meters are online or lost."""
    query = reports.bus_query(caller.organisation_id)
    if gateway_id is not None:
        query = query.where(buses.c.gateway_id == gateway_id)
    with caller.db.read() as conn:
        rows, next_cursor = page(conn, query, buses.c.id, after=after_id(cursor), limit=limit)
    return Page[BusOut](
        items=[BusOut.model_validate(dict(r)) for r in rows], next_cursor=next_cursor
    )


@router.post("/buses", response_model=BusDetailOut, status_code=201)
def create_bus(body: BusIn, caller: MetersWriter) -> BusDetailOut:
    """Register a bus: one line (or endpoint) with one request in flight at a time."""
    spec = service.BusSpec(
        name=body.name,
        protocol=body.protocol,
        transport=body.transport,
        endpoint=body.endpoint,
        gateway_id=body.gateway_id,
        baud=body.baud,
        parity=body.parity,
        timeout_ms=body.timeout_ms,
        poll_interval_s=body.poll_interval_s,
    )
    bus_id = service.create_bus(
        caller.db, organisation_id=caller.organisation_id, spec=spec, actor=caller.actor
    )
    audited(caller, action="bus.create", subject=f"bus:{bus_id}", detail={"name": body.name})
    return _bus(caller, bus_id)


@router.get("/buses/{bus_id}", response_model=BusDetailOut)
def get_bus(bus_id: Id, caller: Reader) -> BusDetailOut:
    """A bus with what the poller last saw of each of its meters."""
    return _bus(caller, bus_id)


def _bus(caller: Caller, bus_id: int) -> BusDetailOut:
    with caller.db.read() as conn:
        found = reports.bus_one(conn, caller.organisation_id, bus_id)
        if found is None:
            raise NotFoundError(f"bus {bus_id} not found")
        statuses = reports.meter_connections(conn, caller.organisation_id, bus_id=bus_id)
    return BusDetailOut.model_validate({**found, "meter_status": [_status(s) for s in statuses]})


def _link(caller: Caller, meter_id: int) -> LinkOut:
    with caller.db.read() as conn:
        row = one(conn, meters, caller.organisation_id, meter_id, "meter")
    options = json.loads(row["device_options"] or "{}")
    return LinkOut(
        meter_id=meter_id,
        bus_id=row["bus_id"],
        address=row["address"],
        protocol=row["protocol"],
        options={str(k): str(v) for k, v in options.items()},
    )


@router.put("/meters/{meter_id}/link", response_model=LinkOut)
def link_meter(meter_id: Id, body: LinkIn, caller: MetersWriter) -> LinkOut:
    """Put a meter on a bus at an address; it takes the bus's protocol and is polled there."""
    service.link_meter(
        caller.db,
        organisation_id=caller.organisation_id,
        meter_id=meter_id,
        bus_id=body.bus_id,
        address=body.address,
        options=body.options,
        actor=caller.actor,
    )
    audited(
        caller,
        action="meter.link",
        subject=f"meter:{meter_id}",
        detail={"bus_id": body.bus_id, "address": body.address},
    )
    return _link(caller, meter_id)


@router.delete("/meters/{meter_id}/link", response_model=LinkOut)
def unlink_meter(meter_id: Id, caller: MetersWriter) -> LinkOut:
    """Take a meter off its bus (no longer polled); its protocol and address are kept."""
    service.unlink_meter(
        caller.db, organisation_id=caller.organisation_id, meter_id=meter_id, actor=caller.actor
    )
    audited(caller, action="meter.unlink", subject=f"meter:{meter_id}")
    return _link(caller, meter_id)


@router.get("/meters/{meter_id}/status", response_model=MeterStatusOut)
def meter_status(meter_id: Id, caller: Reader) -> MeterStatusOut:
    """Online / lost, last contact, relay, valve, protect and live values as last read."""
    with caller.db.read() as conn:
        found = reports.meter_connections(conn, caller.organisation_id, meter_id=meter_id)
    if not found:
        raise NotFoundError(f"meter {meter_id} not found")
    return _status(found[0])
