"""The control loop inside real transactions: a room's credit runs down through ingest, the alarm
levels and the cut are decided once, a recharge restores exactly once, protect mode and friendly
hours hold, emergency credit is repaid first — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from test_notifications_outbox import Scripted

from meterdesk.billing import accounts, cashier, control_admin, control_tick
from meterdesk.billing.control_send import RecordingOutbox
from meterdesk.billing.ingest import IncomingReading, Ingestor
from meterdesk.db.database import Database
from meterdesk.devices.tables import commands
from meterdesk.metering import service as metering
from meterdesk.notifications import configuration
from meterdesk.notifications.channels.base import DeliveryResult
from meterdesk.notifications.channels.registry import ChannelRegistry
from meterdesk.notifications.dispatcher import Dispatcher
from meterdesk.notifications.model import Channel
from meterdesk.notifications.tables import notification_outbox
from meterdesk.reports import room_grid
from meterdesk.shared.time import FakeClock
from meterdesk.sites import service as sites
from meterdesk.tariffs import service as tariffs

pytestmark = pytest.mark.integration

FLAT_1_YUAN = {
    "utility": "electricity",
    "versions": [{"effective_from": "2026-01-01", "prices": {"flat": "1"}}],
}
LEVELS = [
    {"level": 1, "amount": "20.00", "channels": ["email"]},
    {"level": 2, "amount": "10.00", "channels": ["email"]},
    {"level": 3, "amount": "5.00", "channels": ["email", "voice"]},
]


class Room:
    """One shop with a remotely switchable meter, an account with 30.00 credit, and a pipeline."""

    def __init__(self, db: Database, clock: FakeClock, outbox: RecordingOutbox) -> None:
        self.db, self.clock, self.outbox = db, clock, outbox
        self.org = sites.create_organisation(db, name="Control Co")
        site = sites.create_site(
            db, organisation_id=self.org, name="Park", timezone="Asia/Shanghai"
        )
        building = sites.create_building(db, organisation_id=self.org, site_id=site, name="A")
        floor = sites.create_floor(
            db, organisation_id=self.org, building_id=building, name="1F", level=1
        )
        room = sites.create_room(
            db, organisation_id=self.org, floor_id=floor, name="101", kind="shop"
        )
        customer = sites.create_customer(
            db, organisation_id=self.org, name="张伟", email="zhang@example.com"
        )
        tariff = tariffs.create_tariff(
            db, organisation_id=self.org, name="flat", definition=FLAT_1_YUAN, actor="t"
        )
        spec = metering.MeterSpec(
            number="M1",
            utility="electricity",
            kind="single_phase",
            protocol="dlt645",
            address="000000000001",
            room_id=room,
        )
        self.meter = metering.create_meter(db, organisation_id=self.org, spec=spec, actor="t")
        self.pipeline = Ingestor(db, outbox)
        opened = accounts.open_account(
            db,
            organisation_id=self.org,
            actor="t",
            ingestor=self.pipeline,
            request=accounts.OpenAccount(
                number="A1",
                customer_id=customer,
                room_id=room,
                meters=[accounts.MeterOpening(self.meter, tariff, Decimal(0))],
                initial_credit="30",
            ),
        )
        self.account_id = opened.account_id
        self.register = Decimal(0)

    def use(self, kwh: str) -> None:
        self.clock.advance(timedelta(minutes=15))
        self.register += Decimal(kwh)
        self.pipeline.ingest([IncomingReading(self.meter, self.clock.now, self.register)])

    def recharge(self, amount: str, key: str) -> None:
        cashier.recharge(
            self.db,
            organisation_id=self.org,
            account_id=self.account_id,
            amount=amount,
            method="cash",
            actor="cashier",
            idempotency_key=key,
            outbox=self.outbox,
        )

    def policy(self, **change: object) -> None:
        control_admin.set_account_policy(
            self.db,
            organisation_id=self.org,
            number="A1",
            actor="op",
            outbox=self.outbox,
            change=control_admin.PolicyChange(**change),
        )  # type: ignore[arg-type]

    def always_friendly(self) -> None:
        """A friendly-hours profile covering every hour: a due cut waits."""
        control_admin.create_friendly_profile(
            self.db,
            organisation_id=self.org,
            name="always",
            windows=[{"start": "00:00", "end": "00:00"}],
            weekends=True,
            holidays=True,
            actor="op",
        )
        self.policy(friendly_profile="always")

    def kinds(self) -> list[str]:
        return [c["kind"] for c in self.outbox.commands]

    def events(self) -> list[str]:
        return [m["event"] for m in self.outbox.messages]


@pytest.fixture
def room(db: Database, clock: FakeClock) -> Room:
    r = Room(db, clock, RecordingOutbox())
    control_admin.create_alarm_plan(
        db, organisation_id=r.org, name="default", levels=LEVELS, actor="op"
    )
    r.policy(alarm_plan="default")
    return r


def test_credit_running_down_warns_at_each_level_once_then_cuts_once(room: Room) -> None:
    for _ in range(8):
        room.use("5")  # 30 → 25 → 20 (L1) → 15 → 10 (L2) → 5 (L3) → 0 (cut) → −5 → −10
    assert room.events() == ["alarm_level_1", "alarm_level_2", "alarm_level_3", "supply_cut"]
    assert room.kinds() == ["relay_trip"]


def test_a_recharge_restores_exactly_once_and_rearms_the_alarms(room: Room) -> None:
    for _ in range(7):
        room.use("5")
    room.recharge("50.00", "r1")
    room.recharge("50.00", "r1")  # the same key again: nothing moves, nothing is decided twice
    assert room.kinds() == ["relay_trip", "relay_close"]
    room.use("30")  # 45 → 15: level 1 is armed again
    assert room.events()[-1] == "alarm_level_1"


def test_protect_mode_never_cuts(room: Room) -> None:
    room.policy(protect=True)
    for _ in range(8):
        room.use("5")
    assert "relay_trip" not in room.kinds()
    assert room.kinds()[0] == "protect_on"


def test_friendly_hours_defer_the_cut(room: Room) -> None:
    room.always_friendly()
    for _ in range(8):
        room.use("5")
    assert "relay_trip" not in room.kinds()


def test_emergency_credit_is_taken_once_and_repaid_first_by_the_next_recharge(
    room: Room, db: Database
) -> None:
    room.policy(emergency_credit="10.00")
    for _ in range(7):
        room.use("5")  # balance 0 → cut
    control_admin.take_emergency_credit(
        db, organisation_id=room.org, number="A1", actor="tenant", outbox=room.outbox
    )
    assert room.kinds() == ["relay_trip", "relay_close"]
    with pytest.raises(Exception, match="already taken"):
        control_admin.take_emergency_credit(
            db, organisation_id=room.org, number="A1", actor="tenant", outbox=room.outbox
        )
    room.recharge("30.00", "r2")
    from meterdesk.billing.statements import balance

    # 30.00 credit − 35 kWh at 1.00 = 5.00 arrears; +10.00 emergency; the 30.00 recharge repays the
    # emergency credit first (10.00), then the arrears (5.00): 25.00 left, nothing owed.
    now = balance(db, organisation_id=room.org, number="A1")
    assert (now.balance, now.arrears) == (Decimal("25.00"), Decimal("0.00"))


def test_decisions_leave_through_the_database_outbox_by_default(
    db: Database, clock: FakeClock
) -> None:
    r = Room(db, clock, RecordingOutbox())
    r.pipeline = Ingestor(db)  # the default outbox writes commands rows
    for _ in range(7):
        r.use("5")
    with db.read() as conn:
        rows = conn.execute(select(commands.c.kind, commands.c.status, commands.c.params)).all()
    assert [(row.kind, row.status) for row in rows] == [("relay_trip", "pending")]
    assert json.loads(rows[0].params)["reason"] == "cut"


def test_a_cut_deferred_by_friendly_hours_happens_at_the_first_tick_after_the_window(
    room: Room, db: Database, clock: FakeClock
) -> None:
    # 20:00–08:00 Asia/Shanghai is 12:00–00:00 UTC; the fixture clock starts at 00:00 UTC (08:00 local).
    control_admin.create_friendly_profile(
        db,
        organisation_id=room.org,
        name="nights",
        windows=[{"start": "20:00", "end": "08:00"}],
        weekends=False,
        holidays=False,
        actor="op",
    )
    room.policy(friendly_profile="nights")
    clock.now = clock.now.replace(hour=13)  # 21:00 local: inside the window
    for _ in range(7):
        room.use("5")
    assert "relay_trip" not in room.kinds()
    clock.now = clock.now.replace(hour=23, minute=30)  # 07:30 local next morning: still inside
    assert control_tick.tick(db, outbox=room.outbox).decisions == 0
    clock.now = clock.now + timedelta(hours=1)  # 08:30 local: the window is over
    control_tick.tick(db, outbox=room.outbox)
    assert room.kinds() == ["relay_trip"]
    control_tick.tick(db, outbox=room.outbox)
    assert room.kinds() == ["relay_trip"], "a tick never cuts twice"


def test_days_of_credit_alarm_fires_from_the_usage_forecast(db: Database, clock: FakeClock) -> None:
    r = Room(db, clock, RecordingOutbox())
    control_admin.create_alarm_plan(
        db,
        organisation_id=r.org,
        name="days",
        levels=[{"level": 1, "days_left": 3, "channels": ["sms"]}],
        actor="op",
    )
    r.policy(alarm_plan="days")
    for _ in range(4):
        r.use(
            "2"
        )  # 8.00 used within an hour: a week-average of 8/7 per day against 22.00 left ≈ 19 days
    control_tick.tick(db, outbox=r.outbox)
    assert r.events() == []
    for _ in range(8):
        r.use("2")  # 24.00 used this week, 6.00 left: 6 / (24/7) ≈ 1.75 days
    control_tick.tick(db, outbox=r.outbox)
    assert r.events() == ["alarm_level_1"]


def _grid_tile(room: Room) -> tuple[str, str, int]:
    with room.db.read() as conn:
        found = room_grid.grid(conn, room.org, room_grid.GridFilter(), lambda _: (0, 10))
    (tile,) = found.tiles
    return tile.state, tile.supply, tile.alarm_level


def test_the_room_grid_shows_what_the_control_loop_decided(room: Room) -> None:
    """The grid reads the control state's supply and alarm-level columns, which every write of
    the state keeps in step: an alarm, a cut, a restore, a cut waiting for friendly hours."""
    assert _grid_tile(room) == ("normal", "on", 0)
    room.use("10")  # 30 → 20: level 1
    assert _grid_tile(room) == ("alarm", "on", 1)
    for _ in range(4):
        room.use("5")  # → 0: cut
    assert _grid_tile(room) == ("off", "off", 3)
    room.recharge("50.00", "r1")
    assert _grid_tile(room) == ("normal", "on", 0)
    room.always_friendly()
    room.use("60")  # 50 → 0 and 10.00 in arrears: the cut waits
    assert _grid_tile(room) == ("arrears", "pending", 3)


# --- the last warning before a cut goes at once, whatever the plan's depth --------------------

AMOUNTS = {1: "20.00", 2: "10.00", 3: "5.00"}


@pytest.mark.parametrize(
    ("levels", "urgencies"),
    [
        ((1, 2), {1: "normal", 2: "urgent"}),
        ((1, 2, 3), {1: "normal", 2: "normal", 3: "urgent"}),
        ((1,), {1: "urgent"}),
    ],
    ids=["two-levels", "three-levels", "one-level"],
)
def test_the_last_alarm_level_of_any_plan_is_urgent_and_goes_inside_quiet_hours(
    db: Database, clock: FakeClock, levels: tuple[int, ...], urgencies: dict[int, str]
) -> None:
    """Level 3 was the only urgent alarm: in a plan of levels 1 and 2 (or of level 1 alone) the
    last warning before the cut waited out the night, and the tenant could be cut before it came.
    Through ingest, the control loop, the outbox rows and the dispatcher."""
    r = Room(db, clock, RecordingOutbox())
    r.pipeline = Ingestor(db)  # decisions leave through the database outbox, as in the product
    plan = [{"level": n, "amount": AMOUNTS[n], "channels": ["email"]} for n in levels]
    control_admin.create_alarm_plan(db, organisation_id=r.org, name="plan", levels=plan, actor="op")
    r.policy(alarm_plan="plan")
    configuration.configure_channel(
        db,
        organisation_id=r.org,
        channel="email",
        provider="smtp",
        config={"host": "127.0.0.1", "port": 25, "sender": "n@example.com"},
        secret_refs={},
        events=None,
        actor="op",
    )
    configuration.set_quiet_hours(db, organisation_id=r.org, start="22:00", end="07:00", actor="op")
    clock.now = clock.now.replace(hour=15)  # 23:00 in Shanghai: quiet hours
    for _ in range(5):
        r.use("5")  # 30 → 25 → 20 (L1) → 15 → 10 (L2) → 5 (L3), still before 07:00 local
    morning = clock.now.replace(hour=23, minute=0)  # 07:00 local

    def alarms() -> dict[int, dict[str, object]]:
        with db.read() as conn:
            rows = conn.execute(select(notification_outbox)).mappings().all()
        return {int(str(row["event_kind"])[-1]): dict(row) for row in rows}

    assert {level: row["urgency"] for level, row in alarms().items()} == urgencies
    mail = Scripted([DeliveryResult("mail-1")])
    asyncio.run(
        Dispatcher(db, ChannelRegistry(clock=db.clock, overrides={Channel.EMAIL: mail})).drain()
    )
    last = max(levels)
    assert [message.event_kind for message in mail.seen] == [f"alarm_level_{last}"]
    for level, row in alarms().items():
        if level == last:
            assert row["status"] == "sent"
        else:
            assert (row["status"], row["next_attempt_at"]) == ("pending", morning)
