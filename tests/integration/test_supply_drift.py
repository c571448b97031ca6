"""The control tick puts the platform's supply decision back on meters that show otherwise: a
relay open while supply is on (the demo's self-billing meters tripped tenants with money for
days), a relay closed while it is cut, a valve likewise — once, through the control loop's
outbox, audited, and never against a command in flight, a stale read, an offline meter, meter
billing or a cut waiting for friendly hours; at most once per meter per interval."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from builders import ACTOR, Org, make_org, make_tariff, open_account
from sqlalchemy import select, update

from meterdesk.audit.tables import audit_log
from meterdesk.billing import control_admin, control_tick
from meterdesk.billing.control_send import RecordingOutbox
from meterdesk.billing.ingest import IncomingReading, Ingestor
from meterdesk.db.database import Database
from meterdesk.devices.commands import device_state, writes
from meterdesk.devices.commands import service as command_service
from meterdesk.devices.commands.model import CommandStatus
from meterdesk.devices.ports import Snapshot
from meterdesk.devices.tables import commands, device_status
from meterdesk.metering import service as metering
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration
HOUR = timedelta(hours=1)


@dataclass
class Room:
    db: Database
    clock: FakeClock
    org: Org
    meter_id: int
    number: str

    def shows(self, *, relay: str | None = None, valve: str | None = None, ago_s: int = 0) -> None:
        """A successful read (as the poller or the executor stores it)."""
        at = self.clock.now - timedelta(seconds=ago_s)
        with self.db.transaction() as conn:
            snapshot = Snapshot(self.meter_id, at, relay=relay, valve=valve)
            device_state.save_snapshot(conn, snapshot, at)

    def tick(self, **options: timedelta) -> int:
        return control_tick.tick(self.db, now=self.clock.now, **options).reasserted

    def commands(self) -> list[tuple[str, str, str]]:
        """(kind, status, created_by) of the meter's commands, oldest first."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(commands.c.kind, commands.c.status, commands.c.created_by)
                .where(commands.c.meter_id == self.meter_id)
                .order_by(commands.c.id)
            ).all()
        return [tuple(row) for row in rows]  # type: ignore[misc]

    def finish_all(self, status: CommandStatus = CommandStatus.CONFIRMED) -> None:
        """The executor confirmed every open command of the meter (now)."""
        with self.db.transaction() as conn:
            ids = conn.execute(
                select(commands.c.id).where(
                    commands.c.meter_id == self.meter_id, commands.c.finished_at.is_(None)
                )
            ).scalars()
            for command_id in list(ids):
                writes.finish(conn, command_id, status, None, self.clock.now)

    def policy(self, **change: object) -> None:
        control_admin.set_account_policy(
            self.db, organisation_id=self.org.id, number=self.number, actor="op",
            outbox=RecordingOutbox(), change=control_admin.PolicyChange(**change),  # type: ignore[arg-type]
        )  # fmt: skip


def make_room(
    db: Database,
    clock: FakeClock,
    *,
    utility: str = "electricity",
    billing_mode: str = "platform",
    credit: str = "3000",
) -> Room:
    org = make_org(db)
    definition = {
        "utility": utility,
        "versions": [{"effective_from": "2026-01-01", "prices": {"flat": "1"}}],
    }
    tariff = make_tariff(db, org, definition=definition)
    spec = metering.MeterSpec(
        number="M1", utility=utility, kind="water" if utility == "water" else "single_phase",
        protocol="cjt188" if utility == "water" else "dlt645",
        address="00000000000001" if utility == "water" else "000000000001", room_id=org.room_id,
    )  # fmt: skip
    meter_id = metering.create_meter(db, organisation_id=org.id, spec=spec, actor=ACTOR)
    if billing_mode == "platform":
        open_account(db, org, "A-1", [(meter_id, tariff, "0")], credit=credit)
    else:
        from meterdesk.billing import accounts

        request = accounts.OpenAccount(
            number="A-1", customer_id=org.customer_id, room_id=org.room_id,
            meters=[accounts.MeterOpening(meter_id, tariff, Decimal(0))], billing_mode=billing_mode,
            initial_credit=credit,
        )  # fmt: skip
        accounts.open_account(db, organisation_id=org.id, request=request, actor=ACTOR)
    room = Room(db, clock, org, meter_id, "A-1")
    room.finish_all()  # whatever opening sent (a meter-billing recharge push) is done
    clock.advance(timedelta(minutes=1))
    return room


def use(room: Room, total: str) -> None:
    Ingestor(room.db).ingest([IncomingReading(room.meter_id, room.clock.now, Decimal(total))])


def reasserts(room: Room) -> list[tuple[str, str, str]]:
    return [c for c in room.commands() if c[2] == "system:control"]


def test_a_meter_showing_relay_open_while_supply_is_on_gets_one_close_command(
    db: Database, clock: FakeClock
) -> None:
    room = make_room(db, clock)
    room.shows(relay="open")
    assert room.tick() == 1
    assert room.commands() == [("relay_close", "pending", "system:control")]
    assert room.tick() == 0  # restart-safe: the same tick again, and again, adds nothing
    clock.advance(timedelta(minutes=1))
    assert room.tick() == 0  # its command is open
    assert len(room.commands()) == 1
    with db.read() as conn:
        params = json.loads(conn.execute(select(commands.c.params)).scalar_one())
        entries = conn.execute(
            select(
                audit_log.c.actor, audit_log.c.action, audit_log.c.subject, audit_log.c.detail
            ).where(audit_log.c.action == "supply.reassert")
        ).all()
    assert params["why"] == "meter showed relay open while supply is on"
    assert params["reason"] == "reassert"
    assert [(e.actor, e.action, e.subject) for e in entries] == [
        ("system:control", "supply.reassert", "account:A-1")
    ]
    assert json.loads(entries[0].detail) == {
        "meter": "M1", "command": "relay_close", "why": "meter showed relay open while supply is on",
    }  # fmt: skip


def test_a_meter_that_keeps_flipping_gets_one_command_per_interval(
    db: Database, clock: FakeClock
) -> None:
    room = make_room(db, clock)
    room.shows(relay="open")
    assert room.tick() == 1
    for _ in range(5):  # confirmed, then it trips again (overload protection), every 10 minutes
        clock.advance(timedelta(minutes=5))
        room.finish_all()
        clock.advance(timedelta(minutes=5))
        room.shows(relay="open")
        assert room.tick() == 0
    clock.advance(timedelta(minutes=10))  # an hour after the first
    assert room.tick() == 1
    assert room.tick() == 0
    assert [kind for kind, _, _ in room.commands()] == ["relay_close", "relay_close"]


def test_the_interval_is_the_callers(db: Database, clock: FakeClock) -> None:
    room = make_room(db, clock)
    room.shows(relay="open")
    assert room.tick(reassert_interval=timedelta(minutes=5)) == 1
    clock.advance(timedelta(minutes=1))
    room.finish_all()
    clock.advance(timedelta(minutes=4))
    room.shows(relay="open")
    assert room.tick(reassert_interval=timedelta(minutes=5)) == 1


def test_a_read_from_before_the_latest_finished_command_is_stale(
    db: Database, clock: FakeClock
) -> None:
    room = make_room(db, clock)
    command_service.send_command(
        db, organisation_id=room.org.id, meter_id=room.meter_id, kind="relay_close", params=None,
        actor=ACTOR, idempotency_key="op-close",
    )  # fmt: skip
    room.shows(relay="open", ago_s=30)  # read half a minute before the close was confirmed
    room.finish_all()
    assert room.tick() == 0
    clock.advance(timedelta(minutes=1))
    room.shows(relay="open")  # a fresh read: the meter really is open
    assert room.tick() == 1


def test_a_meter_with_an_open_command_is_left_to_it(db: Database, clock: FakeClock) -> None:
    room = make_room(db, clock)
    command_service.send_command(
        db, organisation_id=room.org.id, meter_id=room.meter_id, kind="clock_sync", params=None,
        actor=ACTOR, idempotency_key="op-clock",
    )  # fmt: skip
    clock.advance(timedelta(minutes=1))
    room.shows(relay="open")
    assert room.tick() == 0
    room.finish_all()
    clock.advance(timedelta(minutes=1))
    room.shows(relay="open")
    assert room.tick() == 1


def test_an_offline_meter_is_not_commanded(db: Database, clock: FakeClock) -> None:
    room = make_room(db, clock)
    room.shows(relay="open")
    with db.transaction() as conn:
        conn.execute(update(device_status).values(state="lost"))
    assert room.tick() == 0
    assert room.commands() == []


def test_on_meter_billing_the_meter_decides(db: Database, clock: FakeClock) -> None:
    room = make_room(db, clock, billing_mode="meter")
    before = room.commands()
    room.shows(relay="open")
    assert room.tick() == 0
    assert room.commands() == before


def test_protect_on_means_supply_on(db: Database, clock: FakeClock) -> None:
    room = make_room(db, clock, credit="0")  # no credit at all: only protect keeps it on
    room.policy(protect=True)
    room.finish_all()
    clock.advance(timedelta(minutes=1))
    room.shows(relay="open")
    assert room.tick() == 1
    assert reasserts(room) == [("relay_close", "pending", "system:control")]


def test_a_meter_showing_relay_closed_while_supply_is_cut_gets_a_trip(
    db: Database, clock: FakeClock
) -> None:
    room = make_room(db, clock, credit="1")
    use(room, "5")  # 5 kWh at 1.00 on 1.00 credit: cut
    assert [c[0] for c in room.commands()] == ["relay_trip"]
    clock.advance(timedelta(minutes=1))
    room.shows(relay="open")
    room.finish_all()
    assert room.tick() == 0  # cut and showing open: agreed
    clock.advance(timedelta(minutes=10))
    room.shows(relay="closed")  # someone bypassed the cut
    assert room.tick() == 1
    assert [c[0] for c in room.commands()] == ["relay_trip", "relay_trip"]


def test_a_cut_waiting_for_friendly_hours_is_not_a_disagreement(
    db: Database, clock: FakeClock
) -> None:
    room = make_room(db, clock, credit="1")
    control_admin.create_friendly_profile(
        db, organisation_id=room.org.id, name="always", windows=[{"start": "00:00", "end": "00:00"}],
        weekends=True, holidays=True, actor="op",
    )  # fmt: skip
    room.policy(friendly_profile="always")
    use(room, "5")  # the cut is due, but waits
    clock.advance(timedelta(minutes=1))
    room.shows(relay="open")
    assert room.tick() == 0
    room.shows(relay="closed")
    assert room.tick() == 0
    assert room.commands() == []


@pytest.mark.parametrize(
    ("shown", "expected"), [("closed", ["valve_open"]), ("open", []), ("abnormal", [])]
)
def test_a_water_valve_is_put_back_too(
    db: Database, clock: FakeClock, shown: str, expected: list[str]
) -> None:
    room = make_room(db, clock, utility="water")
    room.shows(valve=shown)
    assert room.tick() == len(expected)
    assert [c[0] for c in room.commands()] == expected


def test_a_meter_that_agrees_or_was_never_read_is_left_alone(
    db: Database, clock: FakeClock
) -> None:
    room = make_room(db, clock)
    assert room.tick() == 0
    room.shows(relay="closed")
    assert room.tick() == 0
    assert room.commands() == []


def test_a_relay_open_after_a_confirmed_close_allowed_waits_for_the_button(
    db: Database, clock: FakeClock
) -> None:
    room = make_room(db, clock)
    room.policy(restore_mode="close_allowed")
    command_service.send_command(
        db, organisation_id=room.org.id, meter_id=room.meter_id, kind="relay_close_allowed",
        params=None, actor=ACTOR, idempotency_key="allowed",
    )  # fmt: skip
    room.finish_all()
    clock.advance(timedelta(minutes=1))
    room.shows(relay="open")
    assert room.tick() == 0
    command_service.send_command(
        db, organisation_id=room.org.id, meter_id=room.meter_id, kind="relay_trip",
        params=None, actor=ACTOR, idempotency_key="trip",
    )  # fmt: skip
    room.finish_all()
    clock.advance(timedelta(minutes=1))
    room.shows(relay="open")
    assert room.tick() == 1  # supply on, tripped: re-asserted as the account restores
    assert reasserts(room) == [("relay_close_allowed", "pending", "system:control")]


def test_many_meters_in_one_tick_each_get_their_own_command(db: Database, clock: FakeClock) -> None:
    room = make_room(db, clock)
    tariff = make_tariff(db, room.org, name="two")
    others = []
    for i in range(2, 6):
        spec = metering.MeterSpec(
            number=f"M{i}", utility="electricity", kind="single_phase", protocol="dlt645",
            address=f"{i:012d}", room_id=room.org.room_id,
        )  # fmt: skip
        meter_id = metering.create_meter(db, organisation_id=room.org.id, spec=spec, actor=ACTOR)
        open_account(db, room.org, f"A-{i}", [(meter_id, tariff, "0")])
        others.append(meter_id)
    at: datetime = clock.now
    with db.transaction() as conn:
        for meter_id in [room.meter_id, *others]:
            device_state.save_snapshot(conn, Snapshot(meter_id, at, relay="open"), at)
    assert room.tick() == 5
    assert room.tick() == 0
    with db.read() as conn:
        made = conn.execute(select(commands.c.meter_id, commands.c.kind)).all()
    assert sorted(made) == sorted((m, "relay_close") for m in [room.meter_id, *others])


def test_a_cut_deciding_while_the_tick_reasserts_has_the_last_word(
    db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cut decided at the same time (its state written, its command not yet): the tick reads
    the old decision and puts the relay back, and the cut, waiting for the meter lock, then
    supersedes that re-assert — the newest command is the decision's."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("a race between transactions: PostgreSQL (SQLite has one writer at a time)")
    import threading

    from meterdesk.billing.outbox import DatabaseOutbox

    room = make_room(db, clock, credit="1")
    room.shows(relay="open")  # tripped by itself while supply is on
    decided, go_on = threading.Event(), threading.Event()
    real = DatabaseOutbox.send_commands

    def paused(self: DatabaseOutbox, conn: object, requests: object) -> None:
        if threading.current_thread().name == "ingest":  # state written, meter not locked yet
            decided.set()
            go_on.wait(5)
        real(self, conn, requests)  # type: ignore[arg-type]

    monkeypatch.setattr(DatabaseOutbox, "send_commands", paused)
    cut = threading.Thread(target=use, args=(room, "5"), name="ingest")  # 5 kWh on 1.00: cut
    cut.start()
    assert decided.wait(5)
    assert room.tick() == 1  # the old decision, read under the meter lock: supply on
    go_on.set()
    cut.join(5)
    assert room.commands() == [
        ("relay_close", "cancelled", "system:control"),
        ("relay_trip", "pending", "system:control"),
    ]


def _stuck(room: Room, hours: float, outcome: CommandStatus = CommandStatus.FAILED) -> list[float]:
    """Ticks every 10 minutes for ``hours`` while the relay shows open and every re-assert ends
    ``outcome`` a minute after it went (failed: the read-back keeps disagreeing, the relay is
    stuck): the hours from the start at which a re-assert went."""
    start, sent = room.clock.now, []
    while room.clock.now - start < hours * HOUR:
        room.shows(relay="open")
        if room.tick():
            sent.append((room.clock.now - start) / HOUR)
            room.clock.advance(timedelta(minutes=1))
            room.finish_all(outcome)
            room.clock.advance(timedelta(minutes=9))
        else:
            room.clock.advance(timedelta(minutes=10))
    return sent


def _context(room: Room) -> list[tuple[int, str]]:
    """(failed_before, failure_notice) of the meter's re-asserts, oldest first."""
    with room.db.read() as conn:
        rows = conn.execute(
            select(commands.c.params)
            .where(commands.c.meter_id == room.meter_id, commands.c.created_by == "system:control")
            .order_by(commands.c.id)
        ).scalars()
        return [(c["failed_before"], c["failure_notice"]) for c in map(json.loads, rows)]


def test_a_stuck_relays_reasserts_back_off_to_one_a_day(db: Database, clock: FakeClock) -> None:
    """Every failed re-assert doubles the wait for the next (2, 4, 8, 16 hours, then a day): a
    relay that will not close got one command, and its operators one message, every hour."""
    room = make_room(db, clock)
    assert _stuck(room, 80) == [0, 2, 6, 14, 30, 54, 78]
    episodes = _context(room)
    assert [failed for failed, _ in episodes] == [0, 1, 2, 3, 4, 5, 6]
    assert len({notice for _, notice in episodes}) == 1  # one episode
    with db.read() as conn:
        details = conn.execute(
            select(audit_log.c.detail).where(audit_log.c.action == "supply.reassert")
        ).scalars()
        assert [json.loads(d).get("failed_before") for d in details] == [None, 1, 2, 3, 4, 5, 6]


def test_a_confirmed_reassert_ends_the_stuck_episode(db: Database, clock: FakeClock) -> None:
    room = make_room(db, clock)
    assert _stuck(room, 3) == [0, 2]
    # the third goes 4 hours after the second and closes it; then it flips open: hourly again
    assert _stuck(room, 10, CommandStatus.CONFIRMED) == [3, 4, 5, 6, 7, 8, 9]
    clock.advance(timedelta(minutes=10))
    assert _stuck(room, 3) == [0, 2]  # stuck again: a new episode
    episodes = _context(room)
    assert [failed for failed, _ in episodes] == [0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 1]
    assert episodes[-1][1] == episodes[-2][1] != episodes[0][1]


def test_another_relay_command_ends_the_stuck_episode(db: Database, clock: FakeClock) -> None:
    """The decision changed, or an operator tried: the next re-assert waits the interval only."""
    room = make_room(db, clock)
    assert _stuck(room, 3) == [0, 2]
    command_service.send_command(
        db, organisation_id=room.org.id, meter_id=room.meter_id, kind="relay_close",
        params=None, actor=ACTOR, idempotency_key="op-close",
    )  # fmt: skip
    room.finish_all(CommandStatus.FAILED)
    clock.advance(timedelta(minutes=10))
    assert _stuck(room, 1) == [0]  # an hour after the last re-assert, not four
    assert [failed for failed, _ in _context(room)] == [0, 1, 0]


def test_the_backoff_doubles_the_callers_interval_up_to_a_day() -> None:
    from meterdesk.billing.supply_drift import backoff

    five = timedelta(minutes=5)
    assert [backoff(five, n) for n in (0, 1, 2)] == [five, 2 * five, 4 * five]
    assert backoff(five, 9) == timedelta(days=1)  # 5 min × 512 > a day
    assert backoff(HOUR, 10_000) == timedelta(days=1)
    assert backoff(timedelta(days=2), 3) == timedelta(days=2)  # never shorter than the interval


def test_the_operators_hear_of_a_stuck_relay_once_per_episode(
    db: Database, clock: FakeClock
) -> None:
    """Each failed re-assert queued its own "command failed" message: a relay that will not
    close told the operators every hour, for as long as nobody went there. Now the re-asserts
    of one episode share the message; every failure still shows in the command list."""
    import asyncio

    from test_commands import Meters, drain, executor

    from meterdesk.notifications import configuration
    from meterdesk.notifications.tables import notification_outbox

    room = make_room(db, clock)
    configuration.configure_channel(
        db, organisation_id=room.org.id, channel="log", provider="log", actor=ACTOR
    )
    meters = Meters(clock)
    meters.relays[room.meter_id] = "open"
    meters.lose_next_send = 10_000  # the relay never answers a command
    worker = executor(db, clock, meters)

    def ticks(hours: int) -> None:
        end = clock.now + hours * HOUR
        while clock.now < end:
            room.shows(relay=meters.relays[room.meter_id])
            if room.tick():
                asyncio.run(drain(db, clock, worker))
            clock.advance(timedelta(minutes=10))

    def told() -> list[str]:
        with db.read() as conn:
            return list(
                conn.execute(
                    select(notification_outbox.c.event_kind).order_by(notification_outbox.c.id)
                ).scalars()
            )

    ticks(8)
    assert [c[:2] for c in reasserts(room)] == [("relay_close", "failed")] * 3  # 0, ~2, ~6 h
    assert told() == ["command_failed"]
    meters.lose_next_send = 0  # someone went there: the next re-assert closes it
    ticks(10)
    assert reasserts(room)[-1][:2] == ("relay_close", "confirmed")
    meters.relays[room.meter_id] = "open"  # stuck open again: a new episode
    meters.lose_next_send = 10_000
    ticks(2)
    assert reasserts(room)[-1][:2] == ("relay_close", "failed")
    assert told() == ["command_failed", "command_failed"]


def _armed(room: Room) -> None:
    """A close-allowed account restored: a confirmed "close allowed", and the relay read open."""
    room.policy(restore_mode="close_allowed")
    command_service.send_command(
        room.db, organisation_id=room.org.id, meter_id=room.meter_id, kind="relay_close_allowed",
        params=None, actor=ACTOR, idempotency_key="allowed",
    )  # fmt: skip
    room.clock.advance(timedelta(minutes=1))
    room.finish_all()
    room.clock.advance(timedelta(minutes=1))
    room.shows(relay="open")


def test_armed_ends_once_a_read_shows_the_tenant_closed_the_relay(
    db: Database, clock: FakeClock
) -> None:
    """The tenant pressed the button (a read shows the relay closed), and later the relay opens
    by itself: that is drift again and is put back as the account restores. It was never put
    back: a confirmed "close allowed" counted as armed for ever."""
    room = make_room(db, clock)
    _armed(room)
    assert room.tick() == 0  # waits for the button
    clock.advance(timedelta(hours=5))
    room.shows(relay="open")
    assert room.tick() == 0  # still waiting: nobody pressed it
    room.shows(relay="closed")  # the tenant pressed the button
    assert room.tick() == 0
    clock.advance(timedelta(minutes=10))
    room.shows(relay="open")  # local protection tripped it
    assert room.tick() == 1
    assert reasserts(room) == [("relay_close_allowed", "pending", "system:control")]


def test_a_closed_read_from_before_the_close_allowed_does_not_end_armed(
    db: Database, clock: FakeClock
) -> None:
    room = make_room(db, clock)
    room.shows(relay="closed")  # before the cut and the restore
    clock.advance(timedelta(minutes=1))
    _armed(room)
    assert room.tick() == 0


@pytest.mark.parametrize("writer", ["poller", "mqtt"])
def test_every_reader_records_when_the_relay_was_last_seen_closed(
    db: Database, clock: FakeClock, writer: str
) -> None:
    """The poller's flush and the MQTT ingest store reads too: a closed relay they saw ends
    armed as the executor's read does, and a later open read keeps that time."""
    from meterdesk.devices import mqtt_rows, status
    from meterdesk.devices.uplink import MeterReport

    room = make_room(db, clock)
    _armed(room)
    book = status.StatusBook()
    book.track(room.meter_id, None)

    def seen(relay: str) -> None:
        clock.advance(timedelta(minutes=5))
        with db.transaction() as conn:
            if writer == "poller":
                book.succeeded(Snapshot(room.meter_id, clock.now, relay=relay))
                status.write_changes(conn, book.take_changes())
            else:
                time = int(clock.now.timestamp() * 1000)
                report = MeterReport(addr="x", time=time, state="ONLINE", relay=relay)
                mqtt_rows.save_live(conn, {room.meter_id: report}, clock.now)

    seen("open")
    assert room.tick() == 0
    seen("closed")
    closed_at = clock.now
    seen("open")
    with db.read() as conn:
        stored = conn.execute(select(device_status.c.relay, device_status.c.relay_closed_at)).one()
    assert tuple(stored) == ("open", closed_at)
    assert room.tick() == 1
