"""An MQTT gateway whose reports stop is marked lost, with the meters on its buses, and the
operators hear it once per episode (``gateway_offline``); its next report brings it back. On
SQLite and PostgreSQL, and once through the real broker and ``meterdesk run``'s runtime."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from builders import ACTOR, Org, make_meter, make_org
from sqlalchemy import select, update
from test_mqtt_ingest_broker import Gateway, ms, report
from test_notifications_outbox import outbox_rows
from test_offline_events import messages, subscribe

from meterdesk.db.database import Database
from meterdesk.devices import gateway_watchdog, mqtt_ingest, service
from meterdesk.devices.mqtt_ingest import MqttSettings
from meterdesk.devices.mqtt_rows import receive
from meterdesk.devices.mqtt_store import UplinkStore
from meterdesk.devices.offline_events import GATEWAY_SILENT
from meterdesk.devices.tables import device_status, gateways
from meterdesk.devices.uplink import up_topic
from meterdesk.runtime import Runtime, RuntimeSettings
from meterdesk.shared.time import FakeClock, system_clock
from meterdesk.simulator.clock import AcceleratedClock
from support.broker import BROKER, broker_unavailable

pytestmark = pytest.mark.integration
START = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)  # the `clock` fixture's start
SILENCE = timedelta(minutes=15)
A1, A2, A3 = "000000000001", "000000000002", "000000000003"


@dataclass
class MqttSite:
    org: Org
    gateway_id: int
    product_key: str
    meters: dict[str, int]  # addr → meter id (A3 is on the bus but never reported)
    store: UplinkStore

    def send(self, msgid: str, payload: bytes | None = None, *, at: datetime) -> None:
        """One report (every reporting meter online at ``at``, unless ``payload``) committed."""
        payload = payload or report(msgid, [(A1, at, "1001"), (A2, at, "2001")])
        topic = up_topic(self.product_key, "GW0001")
        self.store.commit([receive(topic, payload, time.monotonic())])


def make_mqtt_site(db: Database, *, interval_s: int = 60, product_key: str = "pk") -> MqttSite:
    """An MQTT gateway GW0001 with one mqtt bus (``poll_interval_s`` = its report interval) and
    three meters on it, the operators subscribed to the offline events."""
    org = make_org(db)
    subscribe(db, org.id)
    gateway_id = service.create_gateway(
        db, organisation_id=org.id, site_id=org.site_id, serial="GW0001", name="Block A gateway",
        uplink="mqtt", product_key=product_key, actor=ACTOR,
    )  # fmt: skip
    spec = service.BusSpec("gw-485", "dlt645", "mqtt", "gateway", gateway_id, poll_interval_s=interval_s)  # fmt: skip
    bus_id = service.create_bus(db, organisation_id=org.id, spec=spec, actor=ACTOR)
    found = {}
    for index, addr in enumerate((A1, A2, A3), start=1):
        meter_id = make_meter(db, org, f"M{index}")
        service.link_meter(
            db, organisation_id=org.id, meter_id=meter_id, bus_id=bus_id, address=addr, actor=ACTOR
        )  # fmt: skip
        found[addr] = meter_id
    return MqttSite(org, gateway_id, product_key, found, UplinkStore(db))


def watch(db: Database, **kwargs: Any) -> gateway_watchdog.WatchReport:
    return gateway_watchdog.check(db, now=db.clock(), silence=SILENCE, **kwargs)


def gateway_row(db: Database, gateway_id: int) -> dict[str, Any]:
    with db.read() as conn:
        query = select(gateways.c.state, gateways.c.last_seen_at).where(gateways.c.id == gateway_id)
        return dict(conn.execute(query).mappings().one())


def statuses(db: Database) -> dict[int, tuple[str, str | None, str | None]]:
    """meter id → (state, last_error, relay)."""
    with db.read() as conn:
        rows = conn.execute(
            select(
                device_status.c.meter_id,
                device_status.c.state,
                device_status.c.last_error,
                device_status.c.relay,
            )
        )
        return {int(r[0]): (str(r[1]), r[2], r[3]) for r in rows}


def test_a_silent_gateway_is_lost_with_its_meters_and_announced_once_per_episode(
    db: Database, clock: FakeClock
) -> None:
    site = make_mqtt_site(db)
    m1, m2, m3 = (site.meters[a] for a in (A1, A2, A3))
    seen = clock.now
    site.send("r-1", at=seen)
    clock.advance(timedelta(minutes=14))
    assert watch(db).gateways == [] and gateway_row(db, site.gateway_id)["state"] == "online"
    with db.transaction() as conn:  # M2 read by another path a minute ago
        conn.execute(
            update(device_status)
            .where(device_status.c.meter_id == m2)
            .values(last_seen_at=clock.now - timedelta(minutes=1))
        )

    clock.advance(timedelta(minutes=2))  # 16 minutes of silence
    marked = clock.now
    result = watch(db)
    assert result.gateways == [site.gateway_id] and result.meters == 2
    assert gateway_row(db, site.gateway_id) == {"state": "lost", "last_seen_at": seen}
    assert statuses(db) == {
        m1: ("lost", GATEWAY_SILENT, "closed"),  # its last values kept
        m2: ("online", None, "closed"),  # seen more recently than the threshold
        m3: ("lost", GATEWAY_SILENT, None),  # never reported: a status row, lost
    }
    key = f"gateway:{site.gateway_id}:offline:{seen.isoformat()}"
    params = {"gateway": "GW0001", "since": seen.isoformat(), "at": marked.isoformat()}
    assert messages(db) == [("gateway_offline", key, {"organisation": "Org A", **params})]
    rows = outbox_rows(db)
    assert {(r["channel"], r["address"]) for r in rows} == {
        ("email", "ops@example.com"),
        ("log", "stdout"),
    }
    assert {r["timezone"] for r in rows} == {"Asia/Shanghai"}  # the gateway's site

    clock.advance(timedelta(hours=1))
    assert watch(db).gateways == []  # still lost: nothing new
    assert len(messages(db)) == 1

    back = clock.now
    site.send("r-2", at=back)  # the next report brings it back
    assert gateway_row(db, site.gateway_id) == {"state": "online", "last_seen_at": back}
    assert statuses(db)[m1][:2] == ("online", None)
    clock.advance(timedelta(minutes=16))
    assert watch(db).gateways == [site.gateway_id]
    second = f"gateway:{site.gateway_id}:offline:{back.isoformat()}"
    assert [(event, k) for event, k, _ in messages(db)] == [
        ("gateway_offline", key),
        ("gateway_offline", second),
    ]


def test_a_silent_gateway_leaves_the_meters_of_a_bus_the_poller_reads_through_it(
    db: Database, clock: FakeClock
) -> None:
    """A gateway with an MQTT bus and a transparent line the poller reads: its silence says
    nothing about the polled meters (they were marked lost with it)."""
    site = make_mqtt_site(db)
    spec = service.BusSpec("gw-tcp", "dlt645", "tcp", "127.0.0.1:4001", site.gateway_id)
    tcp_bus = service.create_bus(db, organisation_id=site.org.id, spec=spec, actor=ACTOR)
    polled = make_meter(db, site.org, "M9")
    service.link_meter(
        db, organisation_id=site.org.id, meter_id=polled, bus_id=tcp_bus, address="000000000009",
        actor=ACTOR,
    )  # fmt: skip
    site.send("r-1", at=clock.now)
    clock.advance(timedelta(minutes=16))
    assert watch(db).gateways == [site.gateway_id]
    found = statuses(db)
    assert found[site.meters[A1]][0] == "lost"
    assert polled not in found  # the poller's: no status row written for it


def test_a_gateway_never_heard_and_a_polled_gateway_are_left_to_others(
    db: Database, clock: FakeClock
) -> None:
    site = make_mqtt_site(db)  # never reported
    polled = service.create_gateway(
        db, organisation_id=site.org.id, site_id=site.org.site_id, serial="DTU-7",
        name="Pump house DTU", uplink="transparent_tcp", actor=ACTOR,
    )  # fmt: skip
    with db.transaction() as conn:  # the poller saw it online long ago
        conn.execute(
            update(gateways).where(gateways.c.id == polled).values(state="online", last_seen_at=START)
        )  # fmt: skip
    clock.advance(timedelta(days=2))
    assert watch(db).gateways == []
    assert gateway_row(db, site.gateway_id)["state"] == "unknown"
    assert gateway_row(db, polled)["state"] == "online"
    assert statuses(db) == {} and messages(db) == []


def test_a_gateway_reporting_hourly_is_lost_after_three_missed_reports(
    db: Database, clock: FakeClock
) -> None:
    site = make_mqtt_site(db, interval_s=3600)
    site.send("r-1", at=clock.now)
    clock.advance(timedelta(hours=2, minutes=59))
    assert watch(db).gateways == []  # two reports missed: not lost
    clock.advance(timedelta(minutes=2))
    assert watch(db).gateways == [site.gateway_id]


def test_no_gateway_is_lost_for_silence_while_the_platform_was_not_listening(
    db: Database, clock: FakeClock
) -> None:
    site = make_mqtt_site(db)
    site.send("r-1", at=clock.now)
    clock.advance(timedelta(hours=1))
    reconnected = clock.now - timedelta(minutes=10)  # the broker connection came back then
    assert watch(db, listening_since=reconnected).gateways == []
    clock.advance(timedelta(minutes=6))  # listened 16 minutes, heard nothing from it
    assert watch(db, listening_since=reconnected).gateways == [site.gateway_id]


def test_a_meter_lost_with_its_gateway_is_announced_when_the_gateway_reports_it_offline(
    db: Database, clock: FakeClock
) -> None:
    site = make_mqtt_site(db)
    m1 = site.meters[A1]
    seen = clock.now
    site.send("r-1", at=seen)
    clock.advance(timedelta(minutes=20))
    watch(db)
    assert [event for event, _, _ in messages(db)] == ["gateway_offline"]

    clock.advance(timedelta(minutes=30))
    back = clock.now
    document = json.loads(report("r-2", [(A1, back, "1001"), (A2, back, "2001")]))
    document["reported"]["meters"][0] = {"addr": A1, "time": ms(back), "state": "OFFLINE"}
    site.send("r-2", json.dumps(document).encode(), at=back)  # back, but M1 is not
    site.send("r-3", json.dumps(document | {"msgid": "r-3"}).encode(), at=back)
    assert gateway_row(db, site.gateway_id)["state"] == "online"
    found = [(event, k, p.get("since")) for event, k, p in messages(db)]
    assert found[1:] == [
        ("meter_offline", f"meter:{m1}:offline:{seen.isoformat()}", seen.isoformat())
    ]  # once: the second OFFLINE entry finds it announced


# --- through the broker and `meterdesk run` ------------------------------------------------------


SPEED = 600.0  # ten simulated minutes per real second


@pytest.fixture
def broker() -> tuple[str, int]:
    reason = broker_unavailable()
    if reason:
        pytest.skip(reason)
    return BROKER


def test_the_runtime_marks_a_silent_gateway_lost_and_its_next_report_brings_it_back(
    engine: Any, broker: tuple[str, int]
) -> None:
    clock = AcceleratedClock(START, SPEED)
    db = Database(engine, clock)
    product_key = f"pk{uuid.uuid4().hex[:10]}"
    site = make_mqtt_site(db, product_key=product_key)
    mqtt = MqttSettings(
        host=broker[0],
        port=broker[1],
        client_id=f"test-run-{uuid.uuid4().hex[:8]}",
        topic_filter=f"data/up/{product_key}/+",
        backoff_min_s=0.1,
        backoff_max_s=0.5,
    )
    settings = RuntimeSettings(
        mqtt=mqtt, speed=SPEED, gateway_check_s=60.0, gateway_silence_s=900.0, dispatch_idle_s=0.2
    )
    runtime = Runtime(db, settings, clock=clock)

    async def until_state(state: str, timeout_s: float = 20.0) -> None:
        give_up = time.monotonic() + timeout_s
        while (await asyncio.to_thread(gateway_row, db, site.gateway_id))["state"] != state:
            assert time.monotonic() < give_up, f"the gateway never became {state}"
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(runtime.run(stop))
        try:
            await asyncio.sleep(0)  # run() starts its parts
            assert runtime.mqtt is not None
            await asyncio.wait_for(runtime.mqtt.ready.wait(), 10)
            async with Gateway(*broker, product_key) as gateway:
                for episode in (1, 2):
                    at = clock()
                    payload = report(f"r-{episode}", [(A1, at, "1001"), (A2, at, "2001")])
                    assert (await gateway.send(payload, f"r-{episode}")).res == 1
                    await until_state("online")
                    await until_state("lost")  # silent past 15 simulated minutes
        finally:
            stop.set()
            await asyncio.wait_for(running, 30)

    asyncio.run(scenario())
    assert runtime.stats.gateways_lost == 2 and runtime.stats.watchdog_errors == 0
    assert [event for event, _, _ in messages(db)] == ["gateway_offline", "gateway_offline"]
    assert statuses(db)[site.meters[A1]][0] == "lost"


def test_meterdesk_ingest_mqtt_watches_the_gateways_it_listens_to(
    engine: Any, broker: tuple[str, int]
) -> None:
    """A deployment that ingests MQTT in its own process (``meterdesk ingest-mqtt``) gets the
    watchdog there, where the broker connection is known."""
    db = Database(
        engine, system_clock
    )  # real time: a gateway reporting every second is lost after 3 s
    product_key = f"pk{uuid.uuid4().hex[:10]}"
    site = make_mqtt_site(db, interval_s=1, product_key=product_key)
    mqtt = MqttSettings(
        host=broker[0],
        port=broker[1],
        client_id=f"test-ingest-{uuid.uuid4().hex[:8]}",
        topic_filter=f"data/up/{product_key}/+",
        backoff_min_s=0.1,
        backoff_max_s=0.5,
    )

    async def scenario() -> None:
        stop = asyncio.Event()
        serving = asyncio.create_task(
            mqtt_ingest._serve(db, mqtt, 1.0, gateway_check_s=0.2, stop=stop)
        )
        try:
            async with Gateway(*broker, product_key) as gateway:
                # Until the service has subscribed the broker drops reports: send until one
                # is heard (each under a new id, as a gateway's next report).
                for attempt in range(100):
                    at = datetime.now(UTC)
                    payload = report(f"r-{attempt}", [(A1, at, "1001"), (A2, at, "2001")])
                    await gateway.publish(payload)
                    await asyncio.sleep(0.1)
                    row = await asyncio.to_thread(gateway_row, db, site.gateway_id)
                    if row["last_seen_at"] is not None:
                        break
            give_up = time.monotonic() + 20
            while (await asyncio.to_thread(gateway_row, db, site.gateway_id))["state"] != "lost":
                assert time.monotonic() < give_up, "the silent gateway was never marked lost"
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.wait_for(serving, 30)

    asyncio.run(scenario())
    assert [event for event, _, _ in messages(db)] == ["gateway_offline"]


def test_meterdesk_run_without_a_broker_does_not_judge_mqtt_gateways(engine: Any) -> None:
    """Without its own broker connection the runtime cannot tell a silent gateway from a broker
    or ingest outage elsewhere: it leaves the gateways alone (before, it marked them lost and
    announced them while the separate ingest process was down)."""
    clock = AcceleratedClock(START, SPEED)
    db = Database(engine, clock)
    site = make_mqtt_site(db)
    site.send("r-1", at=clock())
    settings = RuntimeSettings(speed=SPEED, gateway_check_s=60.0, gateway_silence_s=900.0)
    runtime = Runtime(db, settings, clock=clock)

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(runtime.run(stop))
        try:
            while clock() - START < 3 * SILENCE:  # well past the gateway's threshold
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.wait_for(running, 30)

    asyncio.run(scenario())
    assert gateway_row(db, site.gateway_id)["state"] == "online"
    assert runtime.stats.gateways_lost == 0 and messages(db) == []
