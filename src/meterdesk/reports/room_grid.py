"""Room monitoring (房间监控, F-MON-GRID): counts, tree and one page of rooms, worked out by the
database.

A room's state is one SQL expression (:func:`_state`) over its first open account (wallet
balance, arrears), the control loop's ``supply`` and ``alarm_level`` columns (kept beside the JSON
state for this) and whether any of its meters has its relay open; "lost" is any meter lost. So:

1. one ``GROUP BY`` over the site's rooms gives the building → floor tree with its alerts and,
   without a search, the count per state;
2. with a search, a second ``GROUP BY`` gives the counts of the rooms found;
3. the page is the ids of the matching rooms in building / floor / room order with ``LIMIT``;
4. only those rooms are then read in full (account, customer, meters' device state) as tiles.

Nothing is done per room in Python but for the rooms shown, so 10,000 rooms cost what the
database needs to count them (P5, ``meterdesk bench api``). The search is a case-insensitive
substring of the room, customer or account number (:class:`~meterdesk.db.functions.casefold`:
Python's ``casefold`` on SQLite, ``lower`` on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Integer,
    Select,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    type_coerce,
)

from meterdesk.billing.tables import account_controls, accounts
from meterdesk.db.functions import casefold, caseless
from meterdesk.devices.tables import device_status
from meterdesk.ledger.tables import ledger_accounts
from meterdesk.metering.tables import meters
from meterdesk.sites.tables import buildings, customers, floors, rooms, sites

Window = Callable[[int], tuple[int, int]]  # rooms matched → (offset, limit) of the page shown

# Room states, most urgent first: a room shows (and is counted under) the first that holds.
STATES = ("off", "arrears", "overdraft", "alarm", "normal", "vacant")
FILTERS = (*STATES, "lost", "pending", "protected")
ALERT_STATES = ("off", "arrears", "overdraft")  # with "lost": a room the tree flags
LARGE_PAGE = 1000  # rooms: a page this large is read by a sub-query, not a list of ids


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
    tiles: list[RoomTile]  # the page asked for, in building/floor/room order
    offset: int
    matched: int  # rooms matching every filter
    counts: dict[str, int]  # per filter value, over the rooms matching all but the state filter
    total: int  # rooms matching all but the state filter
    tree: list[TreeBuilding]  # every building and floor of the organisation (of the site)


_wallet = ledger_accounts.alias("wallet")
_owed = ledger_accounts.alias("owed")
_earlier = accounts.alias("earlier")
# A room with two open accounts shows the first (lowest id) of them. (An anti-join rather than
# ``id = (SELECT min(id) …)``: PostgreSQL runs that once per room.)
_first_open_account = and_(
    accounts.c.room_id == rooms.c.id,
    accounts.c.status == "open",
    ~exists(
        select(literal(1)).where(
            _earlier.c.room_id == rooms.c.id,
            _earlier.c.status == "open",
            _earlier.c.id < accounts.c.id,
        )
    ),
)
_rooms_with_accounts = (
    rooms.join(floors, floors.c.id == rooms.c.floor_id)
    .join(buildings, buildings.c.id == floors.c.building_id)
    .join(sites, sites.c.id == buildings.c.site_id)
    .outerjoin(accounts, _first_open_account)
    .outerjoin(customers, customers.c.id == accounts.c.customer_id)
    .outerjoin(_wallet, _wallet.c.id == accounts.c.wallet_id)
    .outerjoin(_owed, _owed.c.id == accounts.c.arrears_id)
    .outerjoin(account_controls, account_controls.c.account_id == accounts.c.id)
)
_ORDER = (
    sites.c.id,
    buildings.c.name,
    buildings.c.id,
    floors.c.level,
    floors.c.name,
    floors.c.id,
    rooms.c.name,
    rooms.c.id,
)


def _any_meter(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    return exists(
        select(literal(1))
        .select_from(meters.join(device_status, device_status.c.meter_id == meters.c.id))
        .where(meters.c.room_id == rooms.c.id, condition)
        .correlate(rooms)
    )


_relay_open = _any_meter(device_status.c.relay == "open")
_lost = _any_meter(device_status.c.state == "lost")
_supply = func.coalesce(account_controls.c.supply, "on")
_pending = _supply == "pending"
_protected = func.coalesce(account_controls.c.protect, false())


def _state() -> ColumnElement[str]:
    """The room's state: the most urgent that holds (see :data:`STATES`)."""
    return case(
        (accounts.c.id.is_(None), "vacant"),
        (or_(_supply == "off", _relay_open), "off"),
        (_owed.c.balance_fen < 0, "arrears"),  # arrears balances are ≤ 0
        (_wallet.c.balance_fen < 0, "overdraft"),
        (func.coalesce(account_controls.c.alarm_level, 0) > 0, "alarm"),
        else_="normal",
    )


def _filtered(query: Select[Any], organisation_id: int, where: GridFilter, *, places: bool) -> Any:
    """``query`` over the organisation's rooms (of the site; with ``places``, also of the
    building, floor and search)."""
    query = query.select_from(_rooms_with_accounts).where(
        rooms.c.organisation_id == organisation_id
    )
    if where.site_id is not None:
        query = query.where(sites.c.id == where.site_id)
    if not places:
        return query
    if where.building_id is not None:
        query = query.where(buildings.c.id == where.building_id)
    if where.floor_id is not None:
        query = query.where(floors.c.id == where.floor_id)
    needle = search_text(where.q)
    if needle:
        escaped = needle.replace("/", "//").replace("%", "/%").replace("_", "/_")
        pattern = literal(f"%{escaped}%")
        columns = (rooms.c.name, customers.c.name, accounts.c.number)
        if caseless(needle):  # digits, punctuation, Chinese: folding would change nothing
            found = [column.like(pattern, escape="/") for column in columns]
        else:
            found = [casefold(column).like(casefold(pattern), escape="/") for column in columns]
        query = query.where(or_(*found))
    return query


def search_text(q: str | None) -> str:
    """The text searched for: without control characters (a NUL cuts a LIKE pattern short on
    SQLite and is refused by PostgreSQL) and surrounding blanks."""
    return "".join(c for c in (q or "") if c >= " " and c != "\x7f").strip()


def _in_state(state: str) -> ColumnElement[bool]:
    if state == "lost":
        return _lost
    if state == "pending":
        return _pending
    if state == "protected":
        return _protected
    return _state() == state


def grid(conn: Connection, organisation_id: int, where: GridFilter, window: Window) -> Grid:
    """The counts per state, the building → floor tree and the page ``window`` picks of the
    rooms matching ``where``."""
    if conn.dialect.name == "postgresql":
        # The correlated sub-queries make the planner's estimate high enough to JIT-compile
        # the counting query: ~430 ms of compiling for ~50 ms of work, on every request.
        conn.exec_driver_sql("SET LOCAL jit = off")
    groups = conn.execute(_groups_query(organisation_id, where, places=False)).all()
    tree = _tree(groups)
    if search_text(where.q):
        counts, total = _counts(conn.execute(_groups_query(organisation_id, where, places=True)))
    else:
        counts, total = _counts(
            group
            for group in groups
            if where.building_id in (None, group[0]) and where.floor_id in (None, group[3])
        )
    matched = counts[where.state] if where.state is not None else total
    offset, limit = window(matched)
    page = _page(organisation_id, where, offset, limit)
    ids = list(conn.execute(page).scalars())
    # A usual page is read by its ids (PostgreSQL would join every room before picking the
    # page's ones from a sub-query); thousands of rooms by the sub-query, not as thousands of
    # parameters.
    tiles = load_tiles(conn, ids if len(ids) <= LARGE_PAGE else page) if ids else []
    return Grid(tiles, offset, matched, counts, total, tree)


def _groups_query(organisation_id: int, where: GridFilter, *, places: bool) -> Any:
    """Rooms per (building, floor, state, lost, pending, protected)."""
    state, lost = _state().label("state"), _lost.label("lost")
    pending, protected = _pending.label("pending"), _protected.label("protected")
    query = select(
        buildings.c.id,
        buildings.c.name,
        sites.c.id,
        floors.c.id,
        floors.c.name,
        floors.c.level,
        state,
        lost,
        pending,
        protected,
        func.count().label("rooms"),
    )
    # Grouped by ids: names and level follow from the primary keys (a shorter sort).
    return (
        _filtered(query, organisation_id, where, places=places)
        .group_by(sites.c.id, buildings.c.id, floors.c.id, state, lost, pending, protected)
        .order_by(sites.c.id, buildings.c.name, buildings.c.id, floors.c.level, floors.c.name)
    )


def _counts(groups: Any) -> tuple[dict[str, int], int]:
    counts, total = dict.fromkeys(FILTERS, 0), 0
    for group in groups:
        state, lost, pending, protected, number = group[6:11]
        total += number
        counts[state] += number
        counts["lost"] += number if lost else 0
        counts["pending"] += number if pending else 0
        counts["protected"] += number if protected else 0
    return counts, total


def _tree(groups: Sequence[Any]) -> list[TreeBuilding]:
    found: dict[int, TreeBuilding] = {}
    floor_index: dict[int, TreeFloor] = {}
    for building_id, building_name, site_id, floor_id, floor_name, _, state, lost, *rest in groups:
        number = rest[-1]
        building = found.get(building_id)
        if building is None:
            building = found[building_id] = TreeBuilding(building_id, building_name, site_id)
        floor = floor_index.get(floor_id)
        if floor is None:
            floor = floor_index[floor_id] = TreeFloor(floor_id, floor_name)
            building.floors.append(floor)
        alerts = number if state in ALERT_STATES or lost else 0
        building.rooms += number
        floor.rooms += number
        building.alerts += alerts
        floor.alerts += alerts
    return list(found.values())


def _page(organisation_id: int, where: GridFilter, offset: int, limit: int) -> Any:
    """The ids of the page's rooms, in order."""
    query = _filtered(select(rooms.c.id), organisation_id, where, places=True)
    if where.state is not None:
        query = query.where(_in_state(where.state))
    return query.order_by(*_ORDER).offset(offset).limit(limit)


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
            _wallet.c.balance_fen,
            _owed.c.balance_fen,
            _supply,
            func.coalesce(account_controls.c.alarm_level, 0),
            type_coerce(_protected, Integer),
            _state(),
            meters.c.id,
            device_status.c.state,
            device_status.c.relay,
            device_status.c.valve,
            type_coerce(device_status.c.last_seen_at, BigInteger),
        )
        .select_from(
            _rooms_with_accounts.outerjoin(meters, meters.c.room_id == rooms.c.id).outerjoin(
                device_status, device_status.c.meter_id == meters.c.id
            )
        )
        .where(rooms.c.id.in_(room_ids))
        .order_by(*_ORDER, meters.c.id)
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
    )  # fmt: skip


def load_tiles(conn: Connection, room_ids: list[int] | Select[Any]) -> list[RoomTile]:
    """The rooms of ``room_ids`` (ids, or a query of them) as tiles, in building/floor/room
    order."""
    found: list[RoomTile] = []
    group: list[Sequence[Any]] = []
    for raw in conn.execute(_tiles_query(room_ids)):
        if group and raw[0] != group[0][0]:
            found.append(_tile(group))
            group = []
        group.append(raw)
    if group:
        found.append(_tile(group))
    return found
