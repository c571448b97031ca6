"""The room grid's SQL (state, counts, tree, pages) agrees with a plain Python reading of the same
rooms, on SQLite and PostgreSQL.

A seeded random property is written straight into the tables: buildings with equal names, floors
out of level order, rooms with no, one or two meters (with and without a device-status row, lost,
relay open, valve closed), rooms with no, one or two open accounts and closed ones, wallets below
zero, arrears, and control states off, cut pending, alarmed and protected. The reference below
works each room out on its own from what was written; the grid must give the same counts, tree,
matches and tiles for every filter, search and page.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import pytest
from sqlalchemy import Connection, insert, update

from meterdesk.billing import control_config
from meterdesk.billing.policy import AlarmState, ControlState, Supply
from meterdesk.billing.tables import account_controls, accounts
from meterdesk.db.database import Database
from meterdesk.devices.tables import device_status
from meterdesk.ledger.tables import ledger_accounts
from meterdesk.metering.tables import meters
from meterdesk.reports import room_grid
from meterdesk.sites.tables import buildings, customers, floors, organisations, rooms, sites

pytestmark = pytest.mark.integration
AT = 1_780_000_000_000_000


@dataclass
class Room:
    id: int
    name: str
    site: int
    building: tuple[str, int]
    floor: tuple[int, str, int]
    # (account id, number, customer, wallet fen, arrears fen ≤ 0, supply, alarm level, protect)
    accounts: list[tuple[int, str, str, int, int, str, int, bool]] = field(default_factory=list)
    meters: list[tuple[str | None, str | None, str | None]] = field(default_factory=list)

    @property
    def account(self) -> tuple[int, str, str, int, int, str, int, bool] | None:
        return min(self.accounts) if self.accounts else None

    @property
    def state(self) -> str:
        account = self.account
        if account is None:
            return "vacant"
        _, _, _, wallet, owed, supply, alarm, _ = account
        if supply == "off" or any(relay == "open" for _, relay, _ in self.meters):
            return "off"
        if owed < 0:
            return "arrears"
        if wallet < 0:
            return "overdraft"
        return "alarm" if alarm else "normal"

    @property
    def lost(self) -> bool:
        return any(state == "lost" for state, _, _ in self.meters)

    def is_in(self, state: str | None) -> bool:
        account = self.account
        if state is None:
            return True
        if state == "lost":
            return self.lost
        if state == "pending":
            return account is not None and account[5] == "pending"
        if state == "protected":
            return account is not None and account[7]
        return self.state == state

    def found_by(self, needle: str) -> bool:
        account = self.account
        texts = [self.name] + ([account[1], account[2]] if account else [])
        return any(needle.casefold() in text.casefold() for text in texts)

    def order(self) -> tuple[object, ...]:
        return (
            self.site,
            *self.building,
            self.floor[2],
            self.floor[1],
            self.floor[0],
            self.name,
            self.id,
        )


def _control(rng: random.Random) -> tuple[ControlState, bool, bool]:
    """A control state as the control loop stores it: (state, active, protect)."""
    draw = rng.random()
    alarms = {level: AlarmState(rng.choice([0, 1, 2]), None) for level in rng.sample([1, 2, 3], 2)}
    if draw < 0.2:
        state = ControlState(supply=Supply.OFF, alarms=alarms)
    elif draw < 0.3:
        state = ControlState(supply=Supply.CUT_PENDING, alarms=alarms)
    elif draw < 0.6:
        state = ControlState(alarms=alarms)
    else:
        state = ControlState()
    protect = rng.random() < 0.15
    active = state.supply is not Supply.ON or any(a.sent for a in alarms.values() if state.alarms)
    return state, active, protect


class _Writer:
    """Writes the random property row by row (small: a few hundred rows)."""

    def __init__(self, conn: Connection, rng: random.Random) -> None:
        self.conn, self.rng, self.ids = conn, rng, itertools.count(1)

    def room(self, org: int, room: Room) -> None:
        values = {"organisation_id": org, "floor_id": room.floor[0], "name": room.name}
        self.conn.execute(insert(rooms).values(id=room.id, kind="shop", **values))
        for _ in range(self.rng.choice([0, 1, 1, 1, 2])):
            self.meter(org, room)
        for _ in range(self.rng.choice([0, 1, 1, 1, 2, 3])):
            self.account(org, room)

    def meter(self, org: int, room: Room) -> None:
        meter = next(self.ids)
        self.conn.execute(
            insert(meters).values(
                id=meter, organisation_id=org, site_id=room.site, room_id=room.id,
                number=f"M{meter}", utility="electricity", kind="single_phase", protocol="dlt645",
                address=f"{meter:012d}", ct_ratio=1, pt_ratio=1, register_modulus=1_000_000,
                has_band_registers=False, max_rate_per_hour=100, generation=0, created_at=AT,
            )
        )  # fmt: skip
        if self.rng.random() < 0.15:
            room.meters.append((None, None, None))  # never heard from: no device-status row
            return
        status = (
            self.rng.choice(["online", "lost", "unknown"]),
            self.rng.choice(["closed", "open", None]),
            self.rng.choice(["open", "closed", None]),
        )
        room.meters.append(status)
        self.conn.execute(
            insert(device_status).values(
                meter_id=meter, state=status[0], relay=status[1], valve=status[2], failures=0,
                last_seen_at=AT + meter, updated_at=AT,
            )
        )  # fmt: skip

    def account(self, org: int, room: Room) -> None:
        account, wallet, owed = next(self.ids), next(self.ids), next(self.ids)
        customer = (
            f"Tenant {self.rng.choice(['Wang', 'li', 'LI', '赵', 'Zoë', 'ÉLODIE'])} {account}"
        )
        self.conn.execute(
            insert(customers).values(id=account, organisation_id=org, name=customer, created_at=AT)
        )
        wallet_fen = self.rng.choice([-500, 0, 1, 12_345])
        owed_fen = self.rng.choice([0, 0, -1, -999])
        self.conn.execute(
            insert(ledger_accounts),
            [
                {"id": wallet, "organisation_id": org, "code": f"wallet:{account}", "kind": "wallet",
                 "balance_fen": wallet_fen, "floor_fen": -1000, "created_at": AT},
                {"id": owed, "organisation_id": org, "code": f"arrears:{account}", "kind": "arrears",
                 "balance_fen": owed_fen, "floor_fen": None, "created_at": AT},
            ],
        )  # fmt: skip
        status = "open" if self.rng.random() < 0.8 else "closed"
        number = f"ACC-{account:04d}"
        self.conn.execute(
            insert(accounts).values(
                id=account, organisation_id=org, number=number, customer_id=account,
                room_id=room.id, status=status, billing_mode="platform", wallet_id=wallet,
                arrears_id=owed, opened_at=AT, opened_by="test",
            )
        )  # fmt: skip
        supply, level, protect = "on", 0, False
        if self.rng.random() < 0.7:
            state, active, protect = _control(self.rng)
            shown = control_config.grid_columns(state, active)  # as the control loop writes them
            if active:  # what the grid must show, read from the state itself
                supply = {Supply.OFF: "off", Supply.CUT_PENDING: "pending"}.get(state.supply, "on")
                level = max([k for k, alarm in state.alarms.items() if alarm.sent], default=0)
            self.conn.execute(
                insert(account_controls).values(
                    account_id=account, cut_at="zero", protect=protect, restore_threshold_fen=0,
                    restore_mode="direct", emergency_credit_fen=0,
                    state=control_config.state_to_json(state), watch_fen=0, active=active,
                    version=1, updated_at=AT, **shown,
                )
            )  # fmt: skip
        if status == "open":
            room.accounts.append(
                (account, number, customer, wallet_fen, owed_fen, supply, level, protect)
            )


# Search traps: LIKE's own characters, the escape character, letters that SQLite's lower()
# does not fold (accented, Greek, full-width).
ROOM_NAMES = [
    "101",
    "102",
    "R1",
    "商铺 3",
    "2-01",
    "a07",
    "a_b",
    "x1y",
    "50%",
    "A/B",
    "Émile 3",
    "ΣΟΦΙΑ 2",
    "Ａ101",
]


def build(db: Database, seed: int) -> tuple[int, list[Room]]:
    """Organisation 1 has sites 1 and 2; organisation 2's site 3 must never show."""
    rng = random.Random(seed)
    made: list[Room] = []
    with db.transaction() as conn:
        for org in (1, 2):
            conn.execute(
                insert(organisations).values(
                    id=org, name=f"Org {org}", timezone="UTC", created_at=AT
                )
            )
        for site in (1, 2, 3):
            org = 2 if site == 3 else 1
            conn.execute(
                insert(sites).values(
                    id=site, organisation_id=org, name=f"Site {site}", timezone="UTC", created_at=AT
                )
            )
        writer, used = _Writer(conn, rng), {1: set(), 2: set(), 3: set()}
        for building_id in range(1, 7):
            site = 3 if building_id == 6 else 1 + building_id % 2
            org = 2 if site == 3 else 1
            # the same names in both sites, in an order unlike the ids
            name = rng.choice(sorted({"A 栋", "B 栋", "Block C", "10 栋"} - used[site]))
            used[site].add(name)
            conn.execute(
                insert(buildings).values(
                    id=building_id, organisation_id=org, site_id=site, name=name
                )
            )
            for level in rng.sample(range(1, 6), 3):  # floors not in id order
                floor_id = next(writer.ids)
                conn.execute(
                    insert(floors).values(
                        id=floor_id, organisation_id=org, building_id=building_id,
                        name=f"{level}F", level=level,
                    )
                )  # fmt: skip
                names = rng.sample(ROOM_NAMES, rng.randint(1, 6))
                for room_name in names:
                    room = Room(
                        next(writer.ids), room_name, site, (name, building_id),
                        (floor_id, f"{level}F", level),
                    )  # fmt: skip
                    writer.room(org, room)
                    made.append(room)
    return 1, made


def _expected_tile(room: Room) -> dict[str, object]:
    account = room.account
    heard = room.meters  # a meter never heard from counts, as "unknown"
    states = {m[0] for m in heard}
    return {
        "room_id": room.id,
        "account_id": account[0] if account else None,
        "account_number": account[1] if account else None,
        "customer": account[2] if account else None,
        "balance_fen": account[3] if account else None,
        "arrears_fen": -account[4] if account else None,
        "supply": account[5] if account else "none",
        "alarm_level": account[6] if account else 0,
        "protected": account[7] if account else False,
        "meters": len(heard),
        "connection": "none"
        if not heard
        else ("lost" if "lost" in states else "online" if "online" in states else "unknown"),
        "relay_open": any(m[1] == "open" for m in heard),
        "valve_closed": any(m[2] == "closed" for m in heard),
        "state": room.state,
    }


FILTERS = [
    room_grid.GridFilter(),
    room_grid.GridFilter(site_id=1),
    room_grid.GridFilter(site_id=2, q="r"),
    room_grid.GridFilter(building_id=2),
    room_grid.GridFilter(q="li"),
    room_grid.GridFilter(q="赵"),
    room_grid.GridFilter(q="acc-00"),
    room_grid.GridFilter(q="100%_"),
    room_grid.GridFilter(q="a_"),
    room_grid.GridFilter(q="%1"),
    room_grid.GridFilter(q="0%"),
    room_grid.GridFilter(q="a/"),
    room_grid.GridFilter(q="émile"),
    room_grid.GridFilter(q="ÉMILE"),
    room_grid.GridFilter(q="σοφ"),
    room_grid.GridFilter(q="ａ10"),
    room_grid.GridFilter(q="zoë"),
    room_grid.GridFilter(q="élodie", state="normal"),
    *(room_grid.GridFilter(state=state) for state in room_grid.FILTERS),
    room_grid.GridFilter(building_id=3, state="off"),
    room_grid.GridFilter(site_id=1, q="1", state="normal"),
]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("by_subquery", [False, True], ids=["ids", "subquery"])
def test_the_grid_counts_filters_and_pages_as_each_room_says(
    db: Database, seed: int, by_subquery: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if by_subquery:  # as a page of thousands of rooms is read
        monkeypatch.setattr(room_grid, "LARGE_PAGE", 0)
    organisation_id, made = build(db, seed)
    mine = sorted((room for room in made if room.site in (1, 2)), key=Room.order)
    for where in FILTERS:
        searched = [
            room
            for room in mine
            if where.site_id in (None, room.site)
            and where.building_id in (None, room.building[1])
            and where.floor_id in (None, room.floor[0])
            and (not where.q or room.found_by(where.q))
        ]
        matched = [room for room in searched if room.is_in(where.state)]
        expected_counts = {
            state: sum(room.is_in(state) for room in searched) for state in room_grid.FILTERS
        }
        for offset, limit in ((0, 1000), (0, 3), (4, 5), (len(matched), 10)):
            with db.read() as conn:
                found = room_grid.grid(
                    conn, organisation_id, where, lambda _, o=offset, n=limit: (o, n)
                )
            assert found.total == len(searched), where
            assert found.matched == len(matched), where
            assert found.counts == expected_counts, where
            tiles = [
                {name: getattr(tile, name) for name in _expected_tile(mine[0])}
                for tile in found.tiles
            ]
            assert tiles == [_expected_tile(room) for room in matched[offset : offset + limit]], (
                where
            )
        in_site = [room for room in mine if where.site_id in (None, room.site)]
        tree = [
            (b.id, b.rooms, b.alerts, [(f.id, f.rooms, f.alerts) for f in b.floors])
            for b in found.tree
        ]
        assert tree == _expected_tree(in_site), where


def _expected_tree(in_site: list[Room]) -> list[tuple[int, int, int, list[tuple[int, int, int]]]]:
    buildings_seen: dict[int, tuple[int, int, dict[int, list[int]]]] = {}
    for room in in_site:  # already in building / floor order
        rooms_count, alerts, floors_seen = buildings_seen.get(room.building[1], (0, 0, {}))
        alert = room.state in ("off", "arrears", "overdraft") or room.lost
        floor = floors_seen.setdefault(room.floor[0], [0, 0])
        floor[0] += 1
        floor[1] += alert
        buildings_seen[room.building[1]] = (rooms_count + 1, alerts + alert, floors_seen)
    return [
        (building, count, alerts, [(f, n, a) for f, (n, a) in floors_seen.items()])
        for building, (count, alerts, floors_seen) in buildings_seen.items()
    ]


def test_grid_columns_follow_the_control_state() -> None:
    alarmed = {1: AlarmState(2, None), 3: AlarmState(1, None), 2: AlarmState(0, None)}
    assert control_config.grid_columns(ControlState(supply=Supply.OFF, alarms=alarmed), True) == {
        "supply": "off",
        "alarm_level": 3,
    }
    pending = ControlState(supply=Supply.CUT_PENDING)
    assert control_config.grid_columns(pending, True) == {"supply": "pending", "alarm_level": 0}
    quiet = ControlState(alarms={1: AlarmState(0, None)})
    assert control_config.grid_columns(quiet, True) == {"supply": "on", "alarm_level": 0}
    assert control_config.grid_columns(ControlState(supply=Supply.OFF), False) == {
        "supply": "on",
        "alarm_level": 0,
    }


def test_counts_tree_and_page_come_from_one_snapshot(db: Database) -> None:
    """A change committed while the grid is read (here: between its counting and its page)
    shows in neither: what the grid says it matched is what it lists. On PostgreSQL this needs
    ``Database.snapshot`` (REPEATABLE READ): at READ COMMITTED each statement sees its own."""
    organisation_id, made = build(db, 1)
    off_before = sum(room.state == "off" for room in made if room.site in (1, 2))

    def cut_everyone_meanwhile(matched: int) -> tuple[int, int]:
        with db.transaction() as conn:
            conn.execute(update(account_controls).values(supply="off", active=True))
        return 0, 1000

    with db.snapshot() as conn:
        found = room_grid.grid(
            conn, organisation_id, room_grid.GridFilter(state="off"), cut_everyone_meanwhile
        )
    assert len(found.tiles) == found.matched == found.counts["off"] == off_before
    with db.read() as conn:
        after = room_grid.grid(conn, organisation_id, room_grid.GridFilter(), lambda _: (0, 1))
    assert after.counts["off"] > off_before
