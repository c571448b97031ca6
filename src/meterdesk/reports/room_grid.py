"""Room monitoring (房间监控, F-MON-GRID): every room of an organisation in one SQL query.

One row per room with its building and floor, the open account on it (number, customer, wallet
balance, arrears), the control loop's state (supply on / off / cut pending, alarm levels sent,
protect) and its meters' device state (online / lost, relay, valve, last seen). The query
filters only by organisation and site; building, floor, search text and state are applied in
Python over the rows, so one query also gives the building → floor tree and the count per state
(10,000 rooms: a few tens of milliseconds on SQLite; see ``meterdesk bench api``).

Only accounts whose control state is ``active`` (off, cut pending or alarmed) have their state
JSON parsed: the rest are "supply on, no alarm" by definition of that flag.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, Connection, and_, case, func, select, type_coerce

from meterdesk.billing.tables import account_controls, accounts
from meterdesk.devices.tables import device_status
from meterdesk.ledger.tables import ledger_accounts
from meterdesk.metering.tables import meters
from meterdesk.sites.tables import buildings, customers, floors, rooms, sites

# Room states, most urgent first: a room shows (and is counted under) the first that holds.
STATES = ("off", "arrears", "overdraft", "alarm", "normal", "vacant")
CONNECTIONS = ("online", "lost", "unknown", "none")
FILTERS = (*STATES, "lost", "pending", "protected")


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
    state: str  # one of STATES


@dataclass(frozen=True)
class GridFilter:
    site_id: int | None = None
    building_id: int | None = None
    floor_id: int | None = None
    state: str | None = None  # one of FILTERS
    q: str | None = None


@dataclass
class TreeFloor:
    id: int
    name: str
    rooms: int = 0
    alerts: int = 0  # rooms off, in arrears, overdraft or lost


@dataclass
class TreeBuilding:
    id: int
    name: str
    site_id: int
    rooms: int = 0
    alerts: int = 0
    floors: list[TreeFloor] = field(default_factory=list)


@dataclass
class Grid:
    tiles: list[RoomTile]  # every room that matches the filter, in building/floor/room order
    counts: dict[str, int]  # per filter value, over the rooms matching all but the state filter
    total: int  # rooms matching all but the state filter
    tree: list[TreeBuilding]


def _device_summary(organisation_id: int) -> Any:
    lost = case((device_status.c.state == "lost", 1), else_=0)
    online = case((device_status.c.state == "online", 1), else_=0)
    return (
        select(
            meters.c.room_id,
            func.count().label("meters"),
            func.sum(lost).label("lost"),
            func.sum(online).label("online"),
            func.max(case((device_status.c.relay == "open", 1), else_=0)).label("relay_open"),
            func.max(case((device_status.c.valve == "closed", 1), else_=0)).label("valve_closed"),
            func.max(type_coerce(device_status.c.last_seen_at, BigInteger)).label("last_seen"),
        )
        .select_from(meters.outerjoin(device_status, device_status.c.meter_id == meters.c.id))
        .where(meters.c.organisation_id == organisation_id, meters.c.room_id.is_not(None))
        .group_by(meters.c.room_id)
        .subquery("dev")
    )


def _grid_query(organisation_id: int, site_id: int | None) -> Any:
    dev = _device_summary(organisation_id)
    wallet = ledger_accounts.alias("wallet")
    owed = ledger_accounts.alias("owed")
    query = (
        select(
            rooms.c.id, rooms.c.name, rooms.c.kind, sites.c.id, sites.c.name, buildings.c.id,
            buildings.c.name, floors.c.id, floors.c.name, accounts.c.id, accounts.c.number,
            customers.c.name, wallet.c.balance_fen, owed.c.balance_fen, account_controls.c.active,
            account_controls.c.state, account_controls.c.protect, dev.c.meters, dev.c.lost,
            dev.c.online, dev.c.relay_open, dev.c.valve_closed, dev.c.last_seen,
        )  # fmt: skip
        .select_from(
            rooms.join(floors, floors.c.id == rooms.c.floor_id)
            .join(buildings, buildings.c.id == floors.c.building_id)
            .join(sites, sites.c.id == buildings.c.site_id)
            .outerjoin(accounts, and_(accounts.c.room_id == rooms.c.id, accounts.c.status == "open"))
            .outerjoin(customers, customers.c.id == accounts.c.customer_id)
            .outerjoin(wallet, wallet.c.id == accounts.c.wallet_id)
            .outerjoin(owed, owed.c.id == accounts.c.arrears_id)
            .outerjoin(account_controls, account_controls.c.account_id == accounts.c.id)
            .outerjoin(dev, dev.c.room_id == rooms.c.id)
        )
        .where(rooms.c.organisation_id == organisation_id)
        .order_by(sites.c.id, buildings.c.name, floors.c.level, floors.c.name, rooms.c.name)
    )
    return query if site_id is None else query.where(sites.c.id == site_id)


def _control(active: Any, state_json: Any) -> tuple[str, int]:
    """(supply, alarm level) from the control state; inactive means on and not alarmed."""
    if not active or not state_json:
        return "on", 0
    state = json.loads(state_json)
    supply = {"off": "off", "cut_pending": "pending"}.get(state.get("supply"), "on")
    sent = [int(level) for level, (count, _) in state.get("alarms", {}).items() if count]
    return supply, max(sent, default=0)


def _connection(meter_count: Any, lost: Any, online: Any) -> str:
    if not meter_count:
        return "none"
    if lost:
        return "lost"
    return "online" if online else "unknown"


def classify(account: bool, supply: str, relay_open: bool, arrears: int, balance: int, alarm: int) -> str:
    """The room's state: the most urgent that holds (see :data:`STATES`)."""
    if not account:
        return "vacant"
    if supply == "off" or relay_open:
        return "off"
    if arrears > 0:
        return "arrears"
    if balance < 0:
        return "overdraft"
    return "alarm" if alarm else "normal"


def _tile(row: Sequence[Any]) -> RoomTile:
    (room_id, room, kind, site_id, site, building_id, building, floor_id, floor, account_id,
     number, customer, wallet, owed, active, state_json, protect, meter_count, lost, online,
     relay_open, valve_closed, last_seen) = row  # fmt: skip
    has_account = account_id is not None
    supply, alarm = _control(active, state_json) if has_account else ("none", 0)
    arrears = -int(owed) if owed is not None else 0
    balance = int(wallet) if wallet is not None else 0
    return RoomTile(
        room_id, room, kind, site_id, site, building_id, building, floor_id, floor,
        account_id, number, customer,
        balance if has_account else None, arrears if has_account else None,
        supply, alarm, bool(protect), _connection(meter_count, lost, online), int(meter_count or 0),
        bool(relay_open), bool(valve_closed), None if last_seen is None else int(last_seen),
        classify(has_account, supply, bool(relay_open), arrears, balance, alarm),
    )  # fmt: skip


def load_tiles(conn: Connection, organisation_id: int, site_id: int | None = None) -> list[RoomTile]:
    """Every room of the organisation (of one site), one SQL query. A room with two open
    accounts shows the first (lowest id) of them."""
    seen: set[int] = set()
    tiles = []
    for row in conn.execute(_grid_query(organisation_id, site_id)):
        if row[0] in seen:
            continue
        seen.add(row[0])
        tiles.append(_tile(row))
    return tiles


def matches(tile: RoomTile, state: str | None) -> bool:
    if state is None:
        return True
    if state == "lost":
        return tile.connection == "lost"
    if state == "pending":
        return tile.supply == "pending"
    if state == "protected":
        return tile.protected
    return tile.state == state


def _searched(tiles: Iterable[RoomTile], where: GridFilter) -> list[RoomTile]:
    needle = (where.q or "").strip().casefold()
    found = []
    for tile in tiles:
        if where.building_id is not None and tile.building_id != where.building_id:
            continue
        if where.floor_id is not None and tile.floor_id != where.floor_id:
            continue
        if needle and not any(
            needle in text.casefold()
            for text in (tile.room, tile.customer or "", tile.account_number or "")
        ):
            continue
        found.append(tile)
    return found


def _alert(tile: RoomTile) -> bool:
    return tile.state in ("off", "arrears", "overdraft") or tile.connection == "lost"


def build_tree(tiles: Iterable[RoomTile]) -> list[TreeBuilding]:
    found: dict[int, TreeBuilding] = {}
    floor_index: dict[int, TreeFloor] = {}
    for tile in tiles:
        building = found.get(tile.building_id)
        if building is None:
            building = found[tile.building_id] = TreeBuilding(
                tile.building_id, tile.building, tile.site_id
            )
        floor = floor_index.get(tile.floor_id)
        if floor is None:
            floor = floor_index[tile.floor_id] = TreeFloor(tile.floor_id, tile.floor)
            building.floors.append(floor)
        alert = _alert(tile)
        building.rooms += 1
        floor.rooms += 1
        building.alerts += alert
        floor.alerts += alert
    return list(found.values())


def count_states(tiles: Iterable[RoomTile]) -> dict[str, int]:
    counts = dict.fromkeys(FILTERS, 0)
    for tile in tiles:
        counts[tile.state] += 1
        counts["lost"] += tile.connection == "lost"
        counts["pending"] += tile.supply == "pending"
        counts["protected"] += tile.protected
    return counts


def grid(conn: Connection, organisation_id: int, where: GridFilter) -> Grid:
    """The rooms matching ``where``, the counts per state and the building → floor tree."""
    every = load_tiles(conn, organisation_id, where.site_id)
    searched = _searched(every, where)
    shown = [tile for tile in searched if matches(tile, where.state)]
    return Grid(shown, count_states(searched), len(searched), build_tree(every))
