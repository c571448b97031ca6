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
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Connection, Integer, and_, select, type_coerce

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
    rows: list[Row]  # every room that matches the filter, in building/floor/room order
    counts: dict[str, int]  # per filter value, over the rooms matching all but the state filter
    total: int  # rooms matching all but the state filter
    tree: list[TreeBuilding]

    @property
    def matched(self) -> int:
        return len(self.rows)

    def tiles(self, offset: int, limit: int) -> list[RoomTile]:
        """The rooms ``[offset, offset + limit)`` of the matches, as tiles."""
        return [tile(row) for row in self.rows[offset : offset + limit]]


def _grid_query(organisation_id: int, site_id: int | None) -> Any:
    """Rooms with their open account and each of their meters' device state: a room with n
    meters gives n adjacent rows (ordered by room), folded into one by :func:`load_rows` — cheaper
    on SQLite than a grouped sub-query joined back."""
    wallet = ledger_accounts.alias("wallet")
    owed = ledger_accounts.alias("owed")
    query = (
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
            wallet.c.balance_fen,
            owed.c.balance_fen,
            type_coerce(account_controls.c.active, Integer),
            account_controls.c.state,
            type_coerce(account_controls.c.protect, Integer),
            meters.c.id,
            device_status.c.state,
            device_status.c.relay,
            device_status.c.valve,
            type_coerce(device_status.c.last_seen_at, BigInteger),
        )
        .select_from(
            rooms.join(floors, floors.c.id == rooms.c.floor_id)
            .join(buildings, buildings.c.id == floors.c.building_id)
            .join(sites, sites.c.id == buildings.c.site_id)
            .outerjoin(
                accounts, and_(accounts.c.room_id == rooms.c.id, accounts.c.status == "open")
            )
            .outerjoin(customers, customers.c.id == accounts.c.customer_id)
            .outerjoin(wallet, wallet.c.id == accounts.c.wallet_id)
            .outerjoin(owed, owed.c.id == accounts.c.arrears_id)
            .outerjoin(account_controls, account_controls.c.account_id == accounts.c.id)
            .outerjoin(meters, meters.c.room_id == rooms.c.id)
            .outerjoin(device_status, device_status.c.meter_id == meters.c.id)
        )
        .where(rooms.c.organisation_id == organisation_id)
        .order_by(
            sites.c.id,
            buildings.c.name,
            floors.c.level,
            floors.c.name,
            rooms.c.name,
            rooms.c.id,
            accounts.c.id,
        )
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


def classify(
    account: bool, supply: str, relay_open: bool, arrears: int, balance: int, alarm: int
) -> str:
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


class Devices(NamedTuple):
    meters: int
    connection: str  # online | lost | unknown | none
    relay_open: bool
    valve_closed: bool
    last_seen_us: int | None


NO_DEVICES = Devices(0, "none", False, False, None)


def _devices(raws: Sequence[Sequence[Any]]) -> Devices:
    """The device state of a room's meters (rows 17–21 of each of its query rows)."""
    if len(raws) == 1:  # the common case: one meter
        _, state, relay, valve, last_seen = raws[0][17:22]
        connection = state if state in ("online", "lost") else "unknown"
        return Devices(1, connection, relay == "open", valve == "closed", last_seen)
    seen: dict[int, Sequence[Any]] = {raw[17]: raw for raw in raws if raw[17] is not None}
    if not seen:
        return NO_DEVICES
    states = {raw[18] for raw in seen.values()}
    connection = "lost" if "lost" in states else ("online" if "online" in states else "unknown")
    times = [raw[21] for raw in seen.values() if raw[21] is not None]
    return Devices(
        len(seen),
        connection,
        any(raw[19] == "open" for raw in seen.values()),
        any(raw[20] == "closed" for raw in seen.values()),
        max(times) if times else None,
    )


class Row(NamedTuple):
    """One room as the query gives it (its first row) with what :func:`_judge` made of it:
    cheap to build for 10,000 rooms; a :class:`RoomTile` is made only for the rooms shown."""

    raw: Sequence[Any]
    devices: Devices
    state: str
    supply: str
    alarm: int


def _judge(raws: Sequence[Sequence[Any]]) -> Row:
    raw = raws[0]
    devices = _devices(raws) if len(raws) > 1 or raw[17] is not None else NO_DEVICES
    has_account = raw[9] is not None
    supply, alarm = _control(raw[14], raw[15]) if has_account else ("none", 0)
    arrears = -raw[13] if raw[13] else 0
    state = classify(has_account, supply, devices.relay_open, arrears, raw[12] or 0, alarm)
    return Row(raw, devices, state, supply, alarm)


def tile(row: Row) -> RoomTile:
    (room_id, room, kind, site_id, site, building_id, building, floor_id, floor, account_id,
     number, customer, wallet, owed, _, _, protect) = row.raw[:17]  # fmt: skip
    has_account = account_id is not None
    devices = row.devices
    return RoomTile(
        room_id, room, kind, site_id, site, building_id, building, floor_id, floor,
        account_id, number, customer,
        int(wallet or 0) if has_account else None, -int(owed or 0) if has_account else None,
        row.supply, row.alarm, bool(protect), devices.connection, devices.meters,
        devices.relay_open, devices.valve_closed, devices.last_seen_us, row.state,
    )  # fmt: skip


def load_rows(conn: Connection, organisation_id: int, site_id: int | None = None) -> list[Row]:
    """Every room of the organisation (of one site), in one SQL query. A room with two open
    accounts shows the first (lowest id) of them."""
    found: list[Row] = []
    group: list[Sequence[Any]] = []
    for raw in conn.execute(_grid_query(organisation_id, site_id)):
        if group and raw[0] != group[0][0]:
            found.append(_judge(group))
            group = []
        if not group or raw[9] == group[0][9]:
            group.append(raw)
    if group:
        found.append(_judge(group))
    return found


def load_tiles(
    conn: Connection, organisation_id: int, site_id: int | None = None
) -> list[RoomTile]:
    return [tile(row) for row in load_rows(conn, organisation_id, site_id)]


def matches(row: Row, state: str | None) -> bool:
    if state is None:
        return True
    if state == "lost":
        return row.devices.connection == "lost"
    if state == "pending":
        return row.supply == "pending"
    if state == "protected":
        return bool(row.raw[16])
    return row.state == state


def _searched(rows: Iterable[Row], where: GridFilter) -> list[Row]:
    needle = (where.q or "").strip().casefold()
    found = []
    for row in rows:
        raw = row.raw
        if where.building_id is not None and raw[5] != where.building_id:
            continue
        if where.floor_id is not None and raw[7] != where.floor_id:
            continue
        if needle and not any(
            needle in (text or "").casefold() for text in (raw[1], raw[11], raw[10])
        ):
            continue
        found.append(row)
    return found


def _alert(row: Row) -> bool:
    return row.state in ("off", "arrears", "overdraft") or row.devices.connection == "lost"


def build_tree(rows: Iterable[Row]) -> list[TreeBuilding]:
    found: dict[int, TreeBuilding] = {}
    floor_index: dict[int, TreeFloor] = {}
    for row in rows:
        raw = row.raw
        building = found.get(raw[5])
        if building is None:
            building = found[raw[5]] = TreeBuilding(raw[5], raw[6], raw[3])
        floor = floor_index.get(raw[7])
        if floor is None:
            floor = floor_index[raw[7]] = TreeFloor(raw[7], raw[8])
            building.floors.append(floor)
        alert = _alert(row)
        building.rooms += 1
        floor.rooms += 1
        building.alerts += alert
        floor.alerts += alert
    return list(found.values())


def count_states(rows: Iterable[Row]) -> dict[str, int]:
    counts = dict.fromkeys(FILTERS, 0)
    for row in rows:
        counts[row.state] += 1
        counts["lost"] += row.devices.connection == "lost"
        counts["pending"] += row.supply == "pending"
        counts["protected"] += bool(row.raw[16])
    return counts


def grid(conn: Connection, organisation_id: int, where: GridFilter) -> Grid:
    """The rooms matching ``where``, the counts per state and the building → floor tree."""
    every = load_rows(conn, organisation_id, where.site_id)
    searched = _searched(every, where)
    shown = [row for row in searched if matches(row, where.state)]
    return Grid(shown, count_states(searched), len(searched), build_tree(every))
