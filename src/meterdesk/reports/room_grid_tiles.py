"""The rooms of one page of the grid, read in full as tiles: each room with its place, account,
customer, balances, control state and every meter's device state, in building / floor / room
order. A room with n meters is n adjacent rows of one query, folded into one :class:`RoomTile`
here; only the rooms shown are read (:func:`meterdesk.reports.room_grid.grid`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Connection, Integer, Select, func, select, type_coerce

from meterdesk.billing import quantity
from meterdesk.billing.tables import account_controls, accounts
from meterdesk.devices.tables import device_status
from meterdesk.metering.tables import meters
from meterdesk.reports import room_grid_sql as sql
from meterdesk.sites.tables import buildings, customers, floors, rooms, sites


@dataclass(frozen=True, slots=True)
class RoomTile:
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
    balance_fen: int | None
    arrears_fen: int | None
    supply: str  # on | off | pending | none (no account)
    alarm_level: int  # 0, or the most urgent level sent (1, 2, 3)
    protected: bool
    connection: str  # online | lost | unknown | none (no meter)
    meters: int
    relay_open: bool
    valve_closed: bool
    last_seen_us: int | None
    state: str  # one of room_grid_sql.STATES
    quantity_left: Decimal | None = None  # a quantity-credit account's (购量) kWh or m³ left
    quantity_unit: str | None = None
    customer_id: int | None = None  # the table view links the tenant's name to their page


def _tiles_query(room_ids: list[int] | Select[Any]) -> Any:
    """The rooms with their account and each of their meters' device state: a room with n
    meters gives n adjacent rows, folded into one tile by :func:`load_tiles`."""
    return (
        select(
            rooms.c.id,
            rooms.c.name,
            rooms.c.kind,
            sites.c.id,
            sites.c.name,
            buildings.c.id,
            buildings.c.name,
            floors.c.id,
            floors.c.name,
            accounts.c.id,
            accounts.c.number,
            customers.c.name,
            sql.wallet.c.balance_fen,
            sql.owed.c.balance_fen,
            sql.supply,
            func.coalesce(account_controls.c.alarm_level, 0),
            type_coerce(sql.protected, Integer),
            sql.room_state(),
            meters.c.id,
            device_status.c.state,
            device_status.c.relay,
            device_status.c.valve,
            type_coerce(device_status.c.last_seen_at, BigInteger),
            accounts.c.credit_unit,
            accounts.c.customer_id,
        )
        .select_from(
            sql.rooms_with_accounts.outerjoin(meters, meters.c.room_id == rooms.c.id).outerjoin(
                device_status, device_status.c.meter_id == meters.c.id
            )
        )
        .where(rooms.c.id.in_(room_ids))
        .order_by(*sql.ORDER, meters.c.id)
    )


class Devices(NamedTuple):
    meters: int
    connection: str  # online | lost | unknown | none
    relay_open: bool
    valve_closed: bool
    last_seen_us: int | None


NO_DEVICES = Devices(0, "none", False, False, None)


def _devices(raws: Sequence[Sequence[Any]]) -> Devices:
    """The device state of a room's meters (columns 18–22 of each of its query rows)."""
    if len(raws) == 1:  # the common case: one meter (or none)
        meter_id, state, relay, valve, last_seen = raws[0][18:23]
        if meter_id is None:
            return NO_DEVICES
        connection = state if state in ("online", "lost") else "unknown"
        return Devices(1, connection, relay == "open", valve == "closed", last_seen)
    seen = [raw[18:23] for raw in raws if raw[18] is not None]
    if not seen:
        return NO_DEVICES
    states = {state for _, state, *_ in seen}
    connection = "lost" if "lost" in states else ("online" if "online" in states else "unknown")
    times = [last_seen for *_, last_seen in seen if last_seen is not None]
    return Devices(
        len(seen),
        connection,
        any(relay == "open" for _, _, relay, _, _ in seen),
        any(valve == "closed" for _, _, _, valve, _ in seen),
        max(times) if times else None,
    )


def _tile(raws: Sequence[Sequence[Any]]) -> RoomTile:
    (room_id, room, kind, site_id, site, building_id, building, floor_id, floor, account_id,
     number, customer, wallet, owed, supply, alarm, protect, state) = raws[0][:18]  # fmt: skip
    has_account = account_id is not None
    devices = _devices(raws)
    return RoomTile(
        room_id, room, kind, site_id, site, building_id, building, floor_id, floor,
        account_id, number, customer,
        int(wallet or 0) if has_account else None, -int(owed or 0) if has_account else None,
        supply if has_account else "none", int(alarm), bool(protect), devices.connection,
        devices.meters, devices.relay_open, devices.valve_closed, devices.last_seen_us, state,
        customer_id=raws[0][24],
    )  # fmt: skip


def load_tiles(conn: Connection, room_ids: list[int] | Select[Any]) -> list[RoomTile]:
    """The rooms of ``room_ids`` (ids, or a query of them) as tiles, in building/floor/room
    order."""
    found: list[RoomTile] = []
    group: list[Sequence[Any]] = []
    buying: set[int] = set()
    for raw in conn.execute(_tiles_query(room_ids)):
        if group and raw[0] != group[0][0]:
            found.append(_tile(group))
            buying.update(_quantity_account(group))
            group = []
        group.append(raw)
    if group:
        found.append(_tile(group))
        buying.update(_quantity_account(group))
    return _with_quantity(conn, found, buying)


def _quantity_account(raws: Sequence[Sequence[Any]]) -> set[int]:
    account_id, credit_unit = raws[0][9], raws[0][23]
    return {int(account_id)} if credit_unit == "quantity" else set()


def _with_quantity(conn: Connection, tiles: list[RoomTile], buying: set[int]) -> list[RoomTile]:
    """Quantity accounts' tiles with their kWh or m³ left (three queries for the page, none
    without such accounts)."""
    if not buying:
        return tiles
    left = quantity.lefts(conn, buying)
    return [
        replace(
            tile, quantity_left=left[tile.account_id][0], quantity_unit=left[tile.account_id][1]
        )
        if tile.account_id in left
        else tile
        for tile in tiles
    ]
