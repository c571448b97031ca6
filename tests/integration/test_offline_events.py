"""The operators hear once per offline episode when a meter or gateway goes offline: the poller's
status flush and the MQTT group commit queue ``meter_offline`` / ``gateway_offline`` in the
transaction that records the loss; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from builders import ACTOR, Org, make_meter, make_org
from sqlalchemy import update
from test_mqtt_ingest_broker import make_site, ms, report
from test_notifications_outbox import dispatcher, drain, outbox_rows

from meterdesk.db.database import Database
from meterdesk.devices import service
from meterdesk.devices.drivers.registry import BusConfig, BusConnection
from meterdesk.devices.mqtt_rows import receive
from meterdesk.devices.mqtt_store import UplinkStore
from meterdesk.devices.poller import DatabaseSink, FakePollClock, Poller, PollerSettings
from meterdesk.devices.ports import DeviceError, DeviceTimeoutError, MeterAddress, Snapshot
from meterdesk.devices.status import StatusBook, meter_status, write_changes
from meterdesk.devices.tables import gateways
from meterdesk.devices.transports import DeviceConnectionError, TransportStats
from meterdesk.devices.uplink import up_topic
from meterdesk.metering.tables import meters
from meterdesk.notifications import configuration
from meterdesk.notifications.channels.log import LogChannel
from meterdesk.notifications.model import Channel
from meterdesk.runtime import Runtime, RuntimeSettings
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration
START = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
OFFLINE_EVENTS = ["meter_offline", "gateway_offline"]


def subscribe(db: Database, organisation_id: int) -> None:
    """The log channel and the operators' e-mail, both subscribed to the offline events."""
    configuration.configure_channel(
        db,
        organisation_id=organisation_id,
        channel="log",
        provider="log",
        config={},
        events=OFFLINE_EVENTS,
        actor=ACTOR,
    )
    configuration.configure_channel(
        db,
        organisation_id=organisation_id,
        channel="email",
        provider="smtp",
        config={"host": "h", "port": 25, "sender": "n@example.com", "operator_addresses": ["ops@example.com"]},
        events=OFFLINE_EVENTS,
        actor=ACTOR,
    )  # fmt: skip


def messages(db: Database) -> list[tuple[str, str, dict[str, Any]]]:
    """(event, key, params) of each queued message, once per message (not per channel)."""
    seen: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for row in outbox_rows(db):
        seen.setdefault(
            row["event_key"], (row["event_kind"], row["event_key"], json.loads(row["params"]))
        )
    return list(seen.values())


# --- the poller ---------------------------------------------------------------------------------


@dataclass
class Driver:
    """Meters answer (no register: status only) unless ``down``, raising ``error``."""

    clock: FakePollClock
    down: set[int] = field(default_factory=set)
    error: DeviceError = field(default_factory=lambda: DeviceTimeoutError("no answer"))

    async def read(self, meter: MeterAddress) -> Snapshot:
        if meter.meter_id in self.down:
            raise self.error
        return Snapshot(meter.meter_id, self.clock.now(), relay="closed")

    async def sync_clock(self, meter: MeterAddress, now: datetime) -> None:
        return None

    async def close(self) -> None:
        return None


@dataclass
class Line:
    org: Org
    gateway_id: int
    meters: dict[str, int]  # number → id
    clock: FakePollClock
    driver: Driver

    def poller(self, db: Database, *, book: StatusBook | None = None, sink: Any = None) -> Poller:
        def opener(config: BusConfig, now: Callable[[], datetime]) -> BusConnection:
            return BusConnection(config.bus_id, self.driver, TransportStats(), self.driver.close)  # type: ignore[arg-type]

        plans = service.load_poll_plans(db, organisation_id=self.org.id)
        settings = PollerSettings(lost_after=3)
        sink = sink or DatabaseSink(db)
        return Poller(plans, sink=sink, clock=self.clock, settings=settings, status=book, opener=opener)  # fmt: skip

    def restarted(self, db: Database) -> Poller:
        """A new poller as ``meterdesk run`` starts one: from the stored status."""
        plans = service.load_poll_plans(db, organisation_id=self.org.id)
        runtime = Runtime(db, RuntimeSettings(poller=PollerSettings(lost_after=3)))
        return self.poller(db, book=runtime.status_book(plans, None))


def make_line(db: Database) -> Line:
    org = make_org(db)
    subscribe(db, org.id)
    gateway_id = service.create_gateway(
        db,
        organisation_id=org.id,
        site_id=org.site_id,
        serial="DTU-7",
        name="Pump house DTU",
        uplink="transparent_tcp",
        actor=ACTOR,
    )
    spec = service.BusSpec("rs485", "modbus_tcp", "tcp", "127.0.0.1:1", gateway_id)
    bus_id = service.create_bus(db, organisation_id=org.id, spec=spec, actor=ACTOR)
    numbers = {}
    for index, number in enumerate(("E-101", "E-102"), start=1):
        meter_id = make_meter(db, org, number)
        service.link_meter(
            db, organisation_id=org.id, meter_id=meter_id, bus_id=bus_id, address=str(index), actor=ACTOR
        )  # fmt: skip
        numbers[number] = meter_id
    clock = FakePollClock(START)
    return Line(org, gateway_id, numbers, clock, Driver(clock))


def rounds(line: Line, poller: Poller, count: int) -> None:
    """``count`` polls of every meter, 60 s apart, each flushed."""

    async def scenario() -> None:
        for _ in range(count):
            await line.clock.advance(60)
            await poller.poll_round()

    asyncio.run(scenario())


def test_a_lost_meter_is_announced_once_per_episode(db: Database) -> None:
    line = make_line(db)
    m1 = line.meters["E-101"]
    poller = line.poller(db)
    rounds(line, poller, 1)  # both seen at START + 60 s
    seen_at = START + timedelta(seconds=60)
    line.driver.down = {m1}
    rounds(line, poller, 2)
    assert messages(db) == []  # two failures: not lost yet
    rounds(line, poller, 1)
    key = f"meter:{m1}:offline:{seen_at.isoformat()}"
    marked = START + timedelta(seconds=240)
    params = {
        "meter": "E-101",
        "room": "101",
        "since": seen_at.isoformat(),
        "at": marked.isoformat(),
    }
    assert messages(db) == [("meter_offline", key, {"organisation": "Org A", **params})]
    rows = [r for r in outbox_rows(db) if r["event_kind"] == "meter_offline"]
    assert sorted((r["channel"], r["address"]) for r in rows) == [
        ("email", "ops@example.com"),
        ("log", "stdout"),
    ]
    assert {r["timezone"] for r in rows} == {"Asia/Shanghai"}  # the meter's site

    rounds(line, poller, 3)  # still lost, flushed again and again
    restarted = line.restarted(db)
    rounds(line, restarted, 3)  # a restart while it is still lost
    assert len(messages(db)) == 1
    with db.read() as conn:
        stored = meter_status(conn, m1)
    assert stored is not None and stored.last_seen_at == seen_at  # not forgotten on restart

    line.driver.down = set()
    rounds(line, restarted, 1)
    back = line.clock.now()
    line.driver.down = {m1}
    rounds(line, restarted, 3)
    second = f"meter:{m1}:offline:{back.isoformat()}"
    assert [key for _, key, _ in messages(db)] == [key, second]


def test_a_meter_never_seen_is_announced_once_named_by_when_it_was_marked_lost(
    db: Database,
) -> None:
    line = make_line(db)
    m1 = line.meters["E-101"]
    line.driver.down = {m1}
    rounds(line, line.restarted(db), 3)
    marked = START + timedelta(seconds=180)
    assert [(event, key, params["since"]) for event, key, params in messages(db)] == [
        ("meter_offline", f"meter:{m1}:offline:{marked.isoformat()}", marked.isoformat())
    ]
    rounds(line, line.restarted(db), 3)
    assert len(messages(db)) == 1


def test_a_failed_status_write_queues_nothing_and_the_retry_queues_once(db: Database) -> None:
    line = make_line(db)
    m1 = line.meters["E-101"]

    class FailingOnce(DatabaseSink):
        failures = 1

        def _write(self, readings: Any, changes: Any) -> None:
            if self.failures and changes.lost_meters:
                self.failures -= 1
                with self.db.transaction() as conn:
                    write_changes(conn, changes)
                    raise RuntimeError("database away")  # rolled back, offline rows too
            super()._write(readings, changes)

    poller = line.poller(db, sink=FailingOnce(db))
    line.driver.down = {m1}
    rounds(line, poller, 3)
    assert poller.stats.flush_errors == 1 and messages(db) == []
    rounds(line, poller, 1)  # the retry writes the loss and its message
    rounds(line, poller, 1)
    assert [event for event, _, _ in messages(db)] == ["meter_offline"]


def test_a_gateway_whose_connection_fails_is_announced_once(db: Database, clock: FakeClock) -> None:
    line = make_line(db)
    poller = line.poller(db)
    rounds(line, poller, 1)
    seen_at = line.clock.now()
    line.driver.down = set(line.meters.values())
    line.driver.error = DeviceConnectionError("connection refused")
    rounds(line, poller, 1)  # a failed connection loses the gateway at once
    assert [(event, params["gateway"], params["since"]) for event, _, params in messages(db)] == [
        ("gateway_offline", "DTU-7", seen_at.isoformat())
    ]
    rounds(line, poller, 2)  # the meters follow after three failures
    found = sorted(
        (event, params.get("meter", params.get("gateway"))) for event, _, params in messages(db)
    )
    assert found == [
        ("gateway_offline", "DTU-7"),
        ("meter_offline", "E-101"),
        ("meter_offline", "E-102"),
    ]
    rounds(line, line.restarted(db), 3)
    assert len(messages(db)) == 3

    stream = io.StringIO()
    clock.advance(timedelta(hours=1))  # the dispatcher's time: past the poller's
    channels = {Channel.LOG: LogChannel(stream), Channel.EMAIL: LogChannel(io.StringIO())}
    assert drain(dispatcher(db, **channels)) == 6  # three messages, log and e-mail each
    text = stream.getvalue()
    local = (seen_at + timedelta(hours=8)).strftime("%H:%M")  # the site is in Shanghai
    assert "DTU-7" in text and local in text


def test_nobody_subscribed_queues_nothing(db: Database) -> None:
    line = make_line(db)
    for channel in ("log", "email"):
        configuration.configure_channel(
            db, organisation_id=line.org.id, channel=channel, provider="log" if channel == "log" else "smtp",
            config={} if channel == "log" else {"host": "h", "port": 25, "sender": "n@example.com"},
            events=["supply_cut"], actor=ACTOR,
        )  # fmt: skip
    line.driver.down = set(line.meters.values())
    rounds(line, line.poller(db), 3)
    assert messages(db) == []
    with db.read() as conn:
        state = conn.execute(gateways.select().with_only_columns(gateways.c.state)).scalar_one()
    assert state == "lost"


# --- MQTT -----------------------------------------------------------------------------------------


def offline_report(msgid: str, addr: str, at: datetime) -> bytes:
    document = json.loads(report(msgid, [(addr, at, "1030")]))
    document["reported"]["meters"][0] = {"addr": addr, "time": ms(at), "state": "OFFLINE"}
    return json.dumps(document).encode()


def test_an_mqtt_offline_entry_is_announced_once_per_episode(db: Database) -> None:
    site = make_site(db, ("000000000001", "000000000002"))
    subscribe(db, site.org.id)
    store = UplinkStore(db)
    topic = up_topic(site.product_key, site.serial)
    addr, meter_id = "000000000001", site.meter_ids["000000000001"]

    def send(payload: bytes) -> None:
        store.commit([receive(topic, payload, time.monotonic())])

    seen = START + timedelta(minutes=15)
    send(report("live-1", [(a, seen, "1001") for a in site.meter_ids]))
    send(offline_report("off-1", addr, START + timedelta(minutes=30)))
    params = {"meter": "M1", "room": "101", "since": seen.isoformat(), "at": db.clock().isoformat()}
    assert messages(db) == [
        (
            "meter_offline",
            f"meter:{meter_id}:offline:{seen.isoformat()}",
            {"organisation": "Org A", **params},
        )
    ]
    send(offline_report("off-2", addr, START + timedelta(minutes=45)))  # same content, new msgid
    send(offline_report("off-2", addr, START + timedelta(minutes=45)))  # the same message again
    assert len(messages(db)) == 1

    again = START + timedelta(minutes=60)
    send(report("live-2", [(addr, again, "1002")]))
    send(offline_report("off-3", addr, START + timedelta(minutes=75)))
    assert [key for _, key, _ in messages(db)] == [
        f"meter:{meter_id}:offline:{seen.isoformat()}",
        f"meter:{meter_id}:offline:{again.isoformat()}",
    ]


def test_an_mqtt_offline_entry_for_a_meter_never_seen_names_the_commit_time(db: Database) -> None:
    site = make_site(db)
    subscribe(db, site.org.id)
    with db.transaction() as conn:  # a meter without a room
        conn.execute(update(meters).values(room_id=None))
    store = UplinkStore(db)
    topic = up_topic(site.product_key, site.serial)
    payload = offline_report("off-1", "000000000001", START)
    store.commit([receive(topic, payload, time.monotonic())])
    ((event, key, params),) = messages(db)
    received = db.clock().isoformat()
    assert (event, params) == (
        "meter_offline",
        {"organisation": "Org A", "meter": "M1", "since": received, "at": received},
    )
    assert key == f"meter:{site.meter_ids['000000000001']}:offline:{received}"


def test_an_mqtt_offline_entry_older_than_the_last_read_neither_marks_nor_announces(
    db: Database,
) -> None:
    """A report delayed on its way (a gateway re-sending after a reconnect) arrives after a newer
    one: its OFFLINE entry is history, as an older ONLINE entry is for the live values, so the
    meter read online since is neither marked lost nor announced."""
    site = make_site(db)
    subscribe(db, site.org.id)
    store = UplinkStore(db)
    topic = up_topic(site.product_key, site.serial)
    addr, meter_id = "000000000001", site.meter_ids["000000000001"]

    def send(payload: bytes) -> None:
        store.commit([receive(topic, payload, time.monotonic())])

    seen = START + timedelta(minutes=30)
    send(report("live-1", [(addr, seen, "1001")]))
    send(offline_report("off-late", addr, START + timedelta(minutes=15)))  # made before live-1
    with db.read() as conn:
        status = meter_status(conn, meter_id)
    assert status is not None and (status.state, status.last_seen_at) == ("online", seen)
    assert messages(db) == []
    send(offline_report("off-1", addr, START + timedelta(minutes=45)))  # a real loss still counts
    assert [key for _, key, _ in messages(db)] == [f"meter:{meter_id}:offline:{seen.isoformat()}"]
    with db.read() as conn:
        status = meter_status(conn, meter_id)
    assert status is not None and status.state == "lost"


def test_meterdesk_poll_started_while_a_meter_is_lost_does_not_announce_it_again(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``meterdesk poll`` started its poller from a blank book, so a meter already lost when it
    started was lost again after three failed reads: a second ``meter_offline`` for one outage
    (``meterdesk run`` has started from the stored status since sitting 13)."""
    from meterdesk.billing.ingest import Ingestor
    from meterdesk.cli import devices as cli_devices
    from meterdesk.devices.tables import buses

    line = make_line(db)
    m1, m2 = line.meters["E-101"], line.meters["E-102"]
    line.driver.down = {m1}
    rounds(line, line.poller(db), 3)
    assert [(event, params["meter"]) for event, _, params in messages(db)] == [
        ("meter_offline", "E-101")
    ]
    with db.transaction() as conn:  # poll each meter every second; nothing listens on port 1
        conn.execute(update(buses).values(poll_interval_s=1))

    class Built:
        def __init__(self) -> None:
            self.db, self.ingestor = db, Ingestor(db)

    monkeypatch.setattr(cli_devices, "app", Built)
    cli_devices.poll(org=None, seconds=6)  # the real poller, real connections refused

    found = sorted(
        (event, params.get("meter", params.get("gateway"))) for event, _, params in messages(db)
    )
    assert found == [  # the gateway and E-102 are new losses; E-101 was lost already
        ("gateway_offline", "DTU-7"),
        ("meter_offline", "E-101"),
        ("meter_offline", "E-102"),
    ]
    with db.read() as conn:
        states = [meter_status(conn, meter_id) for meter_id in (m1, m2)]
    assert [state.state if state else None for state in states] == ["lost", "lost"]
