"""Device wiring use cases: gateways, buses, and which meter answers where on which bus.

Every function takes the caller's ``organisation_id`` and treats ids of another organisation as
"not found". Writes are audited in the same transaction; linking or unlinking a meter bumps the
meter-configuration counter (:mod:`meterdesk.db.counters`) because it changes a meter's
protocol and address. Bad input raises :class:`ValidationError` and changes nothing.

:func:`load_poll_plans` is the read side the poller starts from: every pollable bus (transport
tcp or serial) with its meters, each meter's options completed with its site's time zone and
whether it keeps band registers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from meterdesk.audit import service as audit
from meterdesk.db import counters
from meterdesk.db.database import Database
from meterdesk.devices.codecs.modbus_map import ModbusMapError, load_map
from meterdesk.devices.drivers.registry import (
    DEFAULT_LINE,
    POLLABLE_TRANSPORTS,
    BusConfig,
    check_combination,
)
from meterdesk.devices.hj212.gateways import hash_password
from meterdesk.devices.poller import BusPlan
from meterdesk.devices.ports import DeviceError, MeterAddress
from meterdesk.devices.status import StatusBook, load_known
from meterdesk.devices.tables import buses, gateways
from meterdesk.metering.tables import meters
from meterdesk.shared.errors import ConflictError, NotFoundError, ValidationError
from meterdesk.sites.tables import sites

UPLINKS = ("modbus_tcp", "transparent_tcp", "mqtt", "hj212")
ADDRESS_DIGITS = {"dlt645": 12, "cjt188": 14}


@dataclass(frozen=True)
class BusSpec:
    name: str
    protocol: str
    transport: str
    endpoint: str
    gateway_id: int | None = None
    baud: int | None = None
    parity: str | None = None
    timeout_ms: int = 1000
    poll_interval_s: int = 60


def _owned(conn: Connection, table: Table, row_id: int, organisation_id: int, what: str) -> Any:
    row = conn.execute(
        select(table).where(table.c.id == row_id, table.c.organisation_id == organisation_id)
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"{what} {row_id} not found")
    return row


def _insert(conn: Connection, table: Table, values: dict[str, Any], what: str) -> int:
    try:
        result = conn.execute(insert(table).values(**values))
    except IntegrityError:
        raise ConflictError(f"{what} already exists") from None
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def create_gateway(
    db: Database,
    *,
    organisation_id: int,
    site_id: int,
    serial: str,
    name: str,
    uplink: str,
    actor: str,
    host: str | None = None,
    port: int | None = None,
    product_key: str | None = None,
    access_password: str | None = None,
) -> int:
    if uplink not in UPLINKS:
        raise ValidationError(f"uplink: {uplink!r} is not one of {', '.join(UPLINKS)}")
    if not serial.strip() or not name.strip():
        raise ValidationError("serial and name must not be empty")
    if port is not None and not 0 < port < 65536:
        raise ValidationError(f"port: {port} is not a TCP port")
    if access_password is not None and uplink != "hj212":
        raise ValidationError("access password: only HJ212 gateways send one (uplink hj212)")
    password_hash = None if access_password is None else hash_password(access_password)
    now = db.clock()
    values = {
        "organisation_id": organisation_id,
        "site_id": site_id,
        "serial": serial.strip(),
        "name": name.strip(),
        "uplink": uplink,
        "host": host,
        "port": port,
        "product_key": product_key,
        "access_password_hash": password_hash,
        "state": "unknown",
        "created_at": now,
    }
    with db.transaction() as conn:
        _owned(conn, sites, site_id, organisation_id, "site")
        gateway_id = _insert(conn, gateways, values, f"gateway {serial!r}")
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="gateway.create",
            subject=f"gateway:{gateway_id}",
            at=now,
            detail={
                "serial": values["serial"],
                "uplink": uplink,
                "access_password": password_hash is not None,
            },
        )
    return gateway_id


def set_access_password(
    db: Database, *, organisation_id: int, gateway_id: int, password: str, actor: str
) -> None:
    """Set or change the access password (PW) an HJ212 gateway must send; audited without it."""
    password_hash = hash_password(password)
    now = db.clock()
    with db.transaction() as conn:
        row = _owned(conn, gateways, gateway_id, organisation_id, "gateway")
        if row.uplink != "hj212":
            raise ValidationError(f"gateway {row.serial!r} has uplink {row.uplink}, not hj212")
        conn.execute(
            update(gateways)
            .where(gateways.c.id == gateway_id)
            .values(access_password_hash=password_hash)
        )
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="gateway.access_password",
            subject=f"gateway:{gateway_id}",
            at=now,
            detail={"serial": row.serial},
        )


def _bus_values(spec: BusSpec) -> dict[str, Any]:
    try:
        check_combination(spec.protocol, spec.transport)
    except DeviceError as error:
        raise ValidationError(str(error)) from None
    if not spec.name.strip() or not spec.endpoint.strip():
        raise ValidationError("name and endpoint must not be empty")
    if spec.transport == "tcp" and not re.fullmatch(r"\[?[^\s\[\]]+\]?:\d{1,5}", spec.endpoint):
        raise ValidationError(f"endpoint: {spec.endpoint!r} is not host:port")
    baud, parity = DEFAULT_LINE[spec.protocol]
    values = {
        "name": spec.name.strip(),
        "protocol": spec.protocol,
        "transport": spec.transport,
        "endpoint": spec.endpoint.strip(),
        "gateway_id": spec.gateway_id,
        "baud": spec.baud or baud,
        "parity": (spec.parity or parity).upper(),
        "timeout_ms": spec.timeout_ms,
        "poll_interval_s": spec.poll_interval_s,
    }
    if values["parity"] not in ("N", "E", "O"):
        raise ValidationError("parity: N, E or O")
    if not 50 <= spec.timeout_ms <= 60_000 or spec.poll_interval_s < 0:
        raise ValidationError("timeout_ms: 50–60000; poll_interval_s: not negative")
    return values


def create_bus(db: Database, *, organisation_id: int, spec: BusSpec, actor: str) -> int:
    values = _bus_values(spec)
    now = db.clock()
    with db.transaction() as conn:
        if spec.gateway_id is not None:
            _owned(conn, gateways, spec.gateway_id, organisation_id, "gateway")
        values.update(organisation_id=organisation_id, created_at=now)
        bus_id = _insert(conn, buses, values, f"bus {spec.name!r}")
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="bus.create",
            subject=f"bus:{bus_id}",
            at=now,
            detail={k: values[k] for k in ("name", "protocol", "transport", "endpoint")},
        )
    return bus_id


def check_address(protocol: str, address: str) -> str:
    cleaned = address.strip()
    digits = ADDRESS_DIGITS.get(protocol)
    if digits is not None and not re.fullmatch(rf"\d{{{digits}}}", cleaned):
        raise ValidationError(f"address: {protocol} needs {digits} digits, got {address!r}")
    if digits is None and not (cleaned.isdigit() and 1 <= int(cleaned) <= 247):
        raise ValidationError(f"address: a Modbus unit id is 1–247, got {address!r}")
    return cleaned


def _check_options(options: Mapping[str, str]) -> dict[str, str]:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in options.items()):
        raise ValidationError("options: keys and values must be strings")
    if "map" in options:
        try:
            load_map(options["map"])
        except ModbusMapError as error:
            raise ValidationError(f"options.map: {error}") from None
    return dict(options)


def link_meter(
    db: Database,
    *,
    organisation_id: int,
    meter_id: int,
    bus_id: int,
    address: str,
    actor: str,
    options: Mapping[str, str] | None = None,
) -> None:
    """Put a meter on a bus at ``address``; the meter takes the bus's protocol."""
    now = db.clock()
    with db.transaction() as conn:
        meter = _owned(conn, meters, meter_id, organisation_id, "meter")
        bus = _owned(conn, buses, bus_id, organisation_id, "bus")
        cleaned = check_address(bus.protocol, address)
        if (bus.protocol == "cjt188") != (meter.utility == "water"):
            raise ValidationError("CJ/T 188 buses carry water meters, the others electricity")
        taken = conn.execute(
            select(meters.c.number).where(
                meters.c.bus_id == bus_id, meters.c.address == cleaned, meters.c.id != meter_id
            )
        ).scalar_one_or_none()
        if taken is not None:
            raise ConflictError(f"address {cleaned} on bus {bus.name!r} is meter {taken}")
        values = {
            "bus_id": bus_id,
            "address": cleaned,
            "protocol": bus.protocol,
            "device_options": json.dumps(_check_options(options or {}), sort_keys=True),
        }
        conn.execute(update(meters).where(meters.c.id == meter_id).values(**values))
        counters.bump(conn)
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="meter.link",
            subject=f"meter:{meter_id}",
            at=now,
            detail={"bus": bus.name, "address": cleaned, "options": options or {}},
        )


def unlink_meter(db: Database, *, organisation_id: int, meter_id: int, actor: str) -> None:
    """Take a meter off its bus (it is no longer polled); protocol and address are kept."""
    now = db.clock()
    with db.transaction() as conn:
        _owned(conn, meters, meter_id, organisation_id, "meter")
        conn.execute(update(meters).where(meters.c.id == meter_id).values(bus_id=None))
        counters.bump(conn)
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="meter.unlink",
            subject=f"meter:{meter_id}",
            at=now,
        )


def find_by_name(db: Database, *, organisation_id: int, table: Table, name: str) -> int:
    column = table.c.serial if table is gateways else table.c.name
    with db.read() as conn:
        found = conn.execute(
            select(table.c.id).where(table.c.organisation_id == organisation_id, column == name)
        ).scalar_one_or_none()
    if found is None:
        raise NotFoundError(f"{table.name[:-1]} {name!r} not found")
    return int(found)


def list_rows(db: Database, *, organisation_id: int, table: Table) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(
            select(table).where(table.c.organisation_id == organisation_id).order_by(table.c.id)
        )
        found = [dict(row) for row in rows.mappings()]
    for row in found:  # a gateway's password hash never leaves the service
        if "access_password_hash" in row:
            row["access_password_set"] = row.pop("access_password_hash") is not None
    return found


def _meter_address(row: Any) -> MeterAddress:
    options: dict[str, str] = json.loads(row.device_options or "{}")
    options.setdefault("zone", row.timezone)
    options.setdefault("has_band_registers", "1" if row.has_band_registers else "0")
    return MeterAddress(row.meter_id, row.bus_protocol, row.address, options)


def load_poll_plans(db: Database, *, organisation_id: int | None = None) -> list[BusPlan]:
    """Every pollable bus with its meters (of one organisation, or all)."""
    query = (
        select(
            buses,
            meters.c.id.label("meter_id"),
            meters.c.address,
            meters.c.device_options,
            meters.c.has_band_registers,
            buses.c.protocol.label("bus_protocol"),
            sites.c.timezone,
        )
        .join(meters, meters.c.bus_id == buses.c.id)
        .join(sites, sites.c.id == meters.c.site_id)
        .where(buses.c.transport.in_(POLLABLE_TRANSPORTS))
        .order_by(buses.c.id, meters.c.id)
    )
    if organisation_id is not None:
        query = query.where(buses.c.organisation_id == organisation_id)
    grouped: dict[int, tuple[Any, list[MeterAddress]]] = {}
    with db.read() as conn:
        for row in conn.execute(query):
            grouped.setdefault(row.id, (row, []))[1].append(_meter_address(row))
    return [_plan(row, addresses) for row, addresses in grouped.values()]


def _plan(row: Any, addresses: list[MeterAddress]) -> BusPlan:
    config = BusConfig(
        row.id,
        row.protocol,
        row.transport,
        row.endpoint,
        row.baud,
        row.parity,
        row.timeout_ms / 1000,
    )
    return BusPlan(
        config, row.organisation_id, row.gateway_id, row.poll_interval_s, tuple(addresses)
    )


def stored_status_book(
    db: Database, plans: list[BusPlan], *, lost_after: int, previous: StatusBook | None = None
) -> StatusBook:
    """The status book a poller over ``plans`` starts from: ``previous`` (a reload keeps what it
    saw), else a new one; meters it does not track yet start from their stored status, so a
    poller started while a meter is lost goes on from there — neither a new loss (and a second
    ``meter_offline`` message) nor its last values forgotten."""
    book = previous or StatusBook(lost_after=lost_after)
    placed = [(m.meter_id, plan.gateway_id) for plan in plans for m in plan.meters]
    with db.read() as conn:
        load_known(conn, book, placed)
    return book
