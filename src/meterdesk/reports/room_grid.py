"""Room monitoring (房间监控, F-MON-GRID): counts, tree and one page of rooms, worked out by the
database.

A room's state is one SQL expression over its first open account (wallet balance, arrears), the
control loop's ``supply`` and ``alarm_level`` columns (kept beside the JSON state for this) and
whether any of its meters has its relay open; "lost" is any meter lost
(:mod:`meterdesk.reports.room_grid_sql`). So:

1. one ``GROUP BY`` over the site's rooms gives the building → floor tree with its alerts and,
   without a search, the count per state;
2. with a search, a second ``GROUP BY`` gives the counts of the rooms found;
3. the page is the ids of the matching rooms in building / floor / room order with ``LIMIT``;
4. only those rooms are then read in full (account, customer, meters' device state) as tiles
   (:mod:`meterdesk.reports.room_grid_tiles`).

Nothing is done per room in Python but for the rooms shown, so 10,000 rooms cost what the
database needs to count them (P5, ``meterdesk bench api``). The search is a case-insensitive
substring of the room, customer or account number (:class:`~meterdesk.db.functions.casefold`:
Python's ``casefold`` on SQLite, ``lower`` on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Select, func, literal, or_, select

from meterdesk.billing.tables import accounts
from meterdesk.db.functions import casefold, caseless
from meterdesk.reports import room_grid_sql as sql
from meterdesk.reports.room_grid_tiles import RoomTile, load_tiles
from meterdesk.sites.tables import buildings, customers, floors, rooms, sites

Window = Callable[[int], tuple[int, int]]  # rooms matched → (offset, limit) of the page shown

FILTERS = (*sql.STATES, "lost", "pending", "protected")
ALERT_STATES = ("off", "arrears", "overdraft")  # with "lost": a room the tree flags
LARGE_PAGE = 1000  # rooms: a page this large is read by a sub-query, not a list of ids


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


def _filtered(query: Select[Any], organisation_id: int, where: GridFilter, *, places: bool) -> Any:
    """``query`` over the organisation's rooms (of the site; with ``places``, also of the
    building, floor and search)."""
    query = query.select_from(sql.rooms_with_accounts).where(
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
    state, lost = sql.room_state().label("state"), sql.lost.label("lost")
    pending, protected = sql.pending.label("pending"), sql.protected.label("protected")
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
        query = query.where(sql.in_state(where.state))
    return query.order_by(*sql.ORDER).offset(offset).limit(limit)
