"""MQTT uplink ingestion end to end through a real Mosquitto, on SQLite and PostgreSQL.

Each test uses its own product key (so its subscription sees only its own gateways on the shared
broker) and a clean MQTT session (nothing left behind on the broker). The broker-restart test
runs its own Mosquitto on a free port with persistence in a temporary folder, and stops and
starts only that process.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from builders import (
    ACTOR,
    T0,
    Org,
    deducted,
    make_org,
    make_tariff,
    open_account,
    quarantined,
    tou_tier_definition,
    wallet,
)
from sqlalchemy import func, insert, select

from meterdesk.billing.cashier import recharge
from meterdesk.db.database import Database
from meterdesk.devices.mqtt_driver import device_status_snapshot
from meterdesk.devices.mqtt_ingest import MqttIngestService, MqttSettings
from meterdesk.devices.mqtt_rows import Inbound, receive
from meterdesk.devices.mqtt_store import BatchOutcome, UplinkStore
from meterdesk.devices.tables import device_status, gateways, uplink_messages
from meterdesk.devices.uplink import ReportReply, down_topic, parse_report_reply, up_topic
from meterdesk.metering import service as metering
from meterdesk.metering.tables import quarantine, readings
from support.broker import broker_unavailable

pytestmark = pytest.mark.integration

BROKER = ("127.0.0.1", 1883)
D = Decimal


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def broker() -> tuple[str, int]:
    reason = broker_unavailable()
    if reason:
        pytest.skip(reason)
    return BROKER


# --- the site: one organisation, a gateway, meters on it, accounts ------------------------------


@dataclass
class Site:
    org: Org
    product_key: str
    serial: str
    meter_ids: dict[str, int]  # addr → meter id
    accounts: dict[str, Any]  # addr → opened account


def make_site(
    db: Database,
    addrs: tuple[str, ...] = ("000000000001",),
    *,
    definition: dict[str, Any] | None = None,
) -> Site:
    org = make_org(db)
    tariff_id = make_tariff(db, org, definition=definition)
    product_key, serial = f"pk{uuid.uuid4().hex[:10]}", "GW0001"
    with db.transaction() as conn:
        conn.execute(
            insert(gateways).values(
                organisation_id=org.id,
                site_id=org.site_id,
                serial=serial,
                name="Gateway 1",
                uplink="mqtt",
                product_key=product_key,
                state="unknown",
                created_at=T0,
            )
        )
    site = Site(org, product_key, serial, {}, {})
    for index, addr in enumerate(addrs):
        spec = metering.MeterSpec(
            number=f"M{index + 1}",
            utility="electricity",
            kind="single_phase",
            protocol="mqtt_json",
            address=addr,
            room_id=org.room_id,
        )
        meter_id = metering.create_meter(db, organisation_id=org.id, spec=spec, actor=ACTOR)
        site.meter_ids[addr] = meter_id
        site.accounts[addr] = open_account(
            db, org, f"A-{index + 1}", [(meter_id, tariff_id, "1000")], credit="500"
        )
    return site


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def report(
    msgid: str,
    entries: list[tuple[str, datetime, str]],
    *,
    source: str = "REALTIME",
    sn: str = "GW0001",
) -> bytes:
    meters = [
        {
            "addr": addr,
            "time": ms(at),
            "state": "ONLINE",
            "energy_kwh": total,
            "relay": "closed",
            "remaining_money": "12.34",
            "voltage_v": "220.1",
        }
        for addr, at, total in entries
    ]
    return json.dumps(
        {
            "msgid": msgid,
            "method": "report",
            "sn": sn,
            "timestamp": ms(T0),
            "reported": {"source": source, "meters": meters},
        }
    ).encode()


# --- a gateway on the wire, and the service ----------------------------------------------------


class Gateway:
    """Publishes reports (QoS 1) and collects the replies on its down topic."""

    def __init__(self, host: str, port: int, product_key: str, serial: str = "GW0001") -> None:
        self.host, self.port, self.product_key, self.serial = host, port, product_key, serial
        self.replies: list[tuple[float, ReportReply]] = []
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Gateway:
        self._client = aiomqtt.Client(
            self.host, self.port, identifier=f"test-gw-{uuid.uuid4().hex[:8]}"
        )
        await self._client.__aenter__()
        await self._client.subscribe(down_topic(self.product_key, self.serial), qos=1)
        self._reader = asyncio.create_task(self._read(self._client))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._reader is not None and self._client is not None
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self._client.__aexit__(None, None, None)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            self.replies.append((time.monotonic(), parse_report_reply(message.payload)))

    async def publish(self, payload: bytes) -> None:
        assert self._client is not None
        await self._client.publish(up_topic(self.product_key, self.serial), payload, qos=1)

    async def reply(self, msgid: str, *, count: int = 1, timeout: float = 10) -> ReportReply:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [r for _, r in self.replies if r.msgid == msgid]
            if len(found) >= count:
                return found[-1]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no reply #{count} for {msgid} within {timeout} s: {self.replies}")

    async def send(self, payload: bytes, msgid: str, *, count: int = 1) -> ReportReply:
        await self.publish(payload)
        return await self.reply(msgid, count=count)


@asynccontextmanager
async def running(
    db: Database,
    product_key: str,
    *,
    port: int = 1883,
    persistent: bool = False,
    client_id: str | None = None,
    commit: Callable[[list[Inbound]], BatchOutcome] | None = None,
) -> AsyncIterator[MqttIngestService]:
    settings = MqttSettings(
        port=port,
        client_id=client_id or f"test-ingest-{uuid.uuid4().hex[:8]}",
        topic_filter=f"data/up/{product_key}/+",
        persistent=persistent,
        backoff_min_s=0.1,
        backoff_max_s=0.5,
    )
    service = MqttIngestService(commit or UplinkStore(db).commit, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await asyncio.wait_for(service.ready.wait(), 10)
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def device_snapshot(db: Database, meter_id: int) -> dict[str, Any]:
    with db.read() as conn:
        query = select(device_status).where(device_status.c.meter_id == meter_id)
        return dict(conn.execute(query).mappings().one())


def count(db: Database, table: Any) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


# --- the tests -----------------------------------------------------------------------------------


def test_report_becomes_deductions_and_is_answered_only_after_its_commit(
    db: Database, broker: tuple[str, int]
) -> None:
    site = make_site(db)
    addr = "000000000001"
    release = threading.Event()
    committed_at: list[float] = []
    store = UplinkStore(db)

    def slow_commit(batch: list[Inbound]) -> BatchOutcome:
        release.wait(10)
        outcome = store.commit(batch)
        committed_at.append(time.monotonic())
        return outcome

    async def scenario() -> None:
        async with (
            running(db, site.product_key, commit=slow_commit),
            Gateway(*broker, site.product_key) as gateway,
        ):
            await gateway.publish(report("m-1", [(addr, T0 + timedelta(minutes=15), "1010.00")]))
            await asyncio.sleep(0.5)
            assert gateway.replies == []  # held: the batch has not committed
            release.set()
            answer = await gateway.reply("m-1")
            assert answer.res == 1
            assert gateway.replies[0][0] >= committed_at[0]

    asyncio.run(scenario())
    assert deducted(db, site.accounts[addr].account_id) == D("6.54")  # 10 kWh × 0.6537
    assert wallet(db, site.accounts[addr]) == D("493.46")
    status = device_snapshot(db, site.meter_ids[addr])
    assert (status["state"], status["relay"], status["remaining_money"]) == (
        "online",
        "closed",
        D("12.34"),
    )
    assert json.loads(status["live"]) == {"voltage_v": "220.1"}
    with db.read() as conn:
        gateway_row = conn.execute(select(gateways)).mappings().one()
    assert gateway_row["state"] == "online" and gateway_row["last_seen_at"] is not None


def test_a_resent_msgid_is_acknowledged_again_and_not_ingested_twice(
    db: Database, broker: tuple[str, int]
) -> None:
    site = make_site(db)
    addr = "000000000001"
    payload = report("m-7", [(addr, T0 + timedelta(minutes=15), "1010.00")])

    async def scenario() -> MqttIngestService:
        async with (
            running(db, site.product_key) as service,
            Gateway(*broker, site.product_key) as gateway,
        ):
            assert (await gateway.send(payload, "m-7")).res == 1
            assert (await gateway.send(payload, "m-7", count=2)).res == 1
            await gateway.publish(payload)  # twice in one batch as well
            await gateway.publish(payload)
            await gateway.reply("m-7", count=4)
            return service

    service = asyncio.run(scenario())
    assert deducted(db, site.accounts[addr].account_id) == D("6.54")
    assert count(db, readings) == 2  # the opening reading and this one
    assert count(db, uplink_messages) == 1
    assert service.stats.resent == 3


def test_history_overlapping_realtime_gives_the_same_balances_as_in_order(
    db: Database, broker: tuple[str, int]
) -> None:
    site = make_site(db, ("000000000001", "000000000002"), definition=tou_tier_definition())
    in_order, out_of_order = "000000000001", "000000000002"
    totals = ["1003.5", "1007.25", "1009.0", "1016.75", "1020.5", "1026.0"]  # every 2 hours
    times = [T0 + timedelta(hours=2 * (i + 1)) for i in range(len(totals))]

    async def scenario() -> MqttIngestService:
        async with (
            running(db, site.product_key) as service,
            Gateway(*broker, site.product_key) as gateway,
        ):
            for i, (at, total) in enumerate(zip(times, totals, strict=True)):
                await gateway.send(report(f"r-{i}", [(in_order, at, total)]), f"r-{i}")
            # the outage: only the first and the last reading came through live …
            await gateway.send(report("live-0", [(out_of_order, times[0], totals[0])]), "live-0")
            await gateway.send(report("live-5", [(out_of_order, times[5], totals[5])]), "live-5")
            # … then the gateway re-sends its buffer as HISTORY, newest first, overlapping
            for i in (5, 4, 3, 2, 1, 0):
                entry = [(out_of_order, times[i], totals[i])]
                await gateway.send(report(f"h-{i}", entry, source="HISTORY"), f"h-{i}")
            return service

    service = asyncio.run(scenario())
    expected = deducted(db, site.accounts[in_order].account_id)
    assert expected > 0
    assert deducted(db, site.accounts[out_of_order].account_id) == expected
    assert wallet(db, site.accounts[out_of_order]) == wallet(db, site.accounts[in_order])
    assert service.stats.history_messages == 6
    assert service.stats.duplicates == 2  # h-5 and h-0 repeat what came live


def test_malformed_unknown_and_foreign_messages_are_quarantined_with_their_reasons(
    db: Database, broker: tuple[str, int]
) -> None:
    site = make_site(db)
    addr, at = "000000000001", T0 + timedelta(minutes=15)
    floats = json.loads(report("bad-1", [(addr, at, "1010.00")]))
    floats["reported"]["meters"][0]["energy_kwh"] = 1010.0  # a float: refused by the contract

    async def scenario() -> None:
        async with (
            running(db, site.product_key),
            Gateway(*broker, site.product_key) as gateway,
            Gateway(*broker, site.product_key, "GW9999") as stranger,
        ):
            assert (await gateway.send(json.dumps(floats).encode(), "bad-1")).res == 0
            assert (await gateway.send(json.dumps(floats).encode(), "bad-1", count=2)).res == 0
            await gateway.publish(b"\x00not json at all")
            mixed = report("m-2", [(addr, at, "1010.00"), ("999999999999", at, "5.00")])
            assert (await gateway.send(mixed, "m-2")).res == 1
            stray = report("s-1", [(addr, at, "1010.00")], sn="GW9999")
            await stranger.publish(stray)
            await gateway.send(report("m-3", [(addr, at, "1010.00")]), "m-3")  # after s-1's batch
            await asyncio.sleep(0.3)  # replies of one batch go out together
            assert stranger.replies == []  # unknown: not answered, it re-sends at its own pace

    asyncio.run(scenario())
    found = quarantined(db, site.org)
    topic_ref = f"mqtt:data/up/{site.product_key}/GW0001"
    reasons = sorted(q["reason"] for q in found if q["source_ref"] == topic_ref)
    assert len(reasons) == 2  # the float report (once, though sent twice) and the non-JSON one
    assert "not valid JSON" in reasons[0] and "energy_kwh: give a decimal string" in reasons[1]
    assert [q["source_ref"] for q in found if q["reason_code"] == "unknown_meter"] == [
        "mqtt:GW0001:999999999999"
    ]
    assert deducted(db, site.accounts[addr].account_id) == D("6.54")  # the known meter's entry
    with db.read() as conn:
        statuses = [str(r) for r in conn.execute(select(uplink_messages.c.status)).scalars()]
        strays = (
            conn.execute(select(quarantine.c.reason).where(quarantine.c.organisation_id.is_(None)))
            .scalars()
            .all()
        )
    assert sorted(statuses) == ["ingested", "ingested", "rejected"]  # GW9999 not recorded
    assert len(strays) == 1 and "unknown gateway 'GW9999'" in strays[0]


def test_an_offline_entry_marks_the_meter_lost_and_history_does_not_move_live_values_back(
    db: Database, broker: tuple[str, int]
) -> None:
    site = make_site(db)
    addr = "000000000001"
    live = json.loads(report("live", [(addr, T0 + timedelta(minutes=30), "1020")]))
    old = json.loads(report("old", [(addr, T0 + timedelta(minutes=15), "1010")], source="HISTORY"))
    old["reported"]["meters"][0].update(relay="open", remaining_money="99.00")
    offline = json.loads(report("off", [(addr, T0 + timedelta(minutes=45), "1030")]))
    offline["reported"]["meters"][0] = {
        "addr": addr,
        "time": ms(T0 + timedelta(minutes=45)),
        "state": "OFFLINE",
        "energy_kwh": "1030",
    }

    def status() -> dict[str, Any]:
        return device_snapshot(db, site.meter_ids[addr])

    async def scenario() -> None:
        async with running(db, site.product_key), Gateway(*broker, site.product_key) as gateway:
            await gateway.send(json.dumps(live).encode(), "live")
            await gateway.send(json.dumps(old).encode(), "old")
            seen = status()
            assert (seen["relay"], seen["remaining_money"]) == ("closed", D("12.34"))
            assert seen["last_seen_at"] == T0 + timedelta(minutes=30)
            await gateway.send(json.dumps(offline).encode(), "off")

    asyncio.run(scenario())
    final = status()
    assert (final["state"], final["relay"], final["failures"]) == ("lost", "closed", 1)
    assert final["last_seen_at"] == T0 + timedelta(minutes=30)
    assert count(db, readings) == 3  # opening, 15 (history, billed), 30; not the offline one
    assert deducted(db, site.accounts[addr].account_id) == D("13.07")  # 20 kWh × 0.6537
    seen = device_status_snapshot(db, site.meter_ids[addr])  # the MQTT driver's read-back
    assert seen is not None and (seen.relay, seen.remaining_money) == ("closed", D("12.34"))
    assert seen.measured_at == T0 + timedelta(minutes=30)


# --- broker restart: a private Mosquitto ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateBroker:
    """A Mosquitto of our own, with persistence, that this test may stop and start."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, _free_port()
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {folder}/\nuser root\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _answers("127.0.0.1", self.port):
            assert time.monotonic() < deadline, "private mosquitto did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # SIGTERM: mosquitto saves its persistence file
            self.process.wait(10)
            self.process = None


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    if shutil.which("mosquitto") is None:
        pytest.skip("the mosquitto binary is not installed")
    server = PrivateBroker(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_ingest_survives_a_broker_restart_without_losing_a_report(
    db: Database, private_broker: PrivateBroker
) -> None:
    site = make_site(db)
    addr, port = "000000000001", private_broker.port
    at = [T0 + timedelta(minutes=15 * i) for i in (1, 2, 3)]

    async def scenario() -> MqttIngestService:
        async with running(
            db,
            site.product_key,
            port=port,
            persistent=True,
            client_id=f"test-ingest-{uuid.uuid4().hex[:8]}",
        ) as service:
            async with Gateway("127.0.0.1", port, site.product_key) as gateway:
                assert (await gateway.send(report("a", [(addr, at[0], "1010")]), "a")).res == 1
            private_broker.stop()
            deadline = time.monotonic() + 10
            while service.ready.is_set():  # the service notices the broker went away
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            private_broker.start()
            # published before the service is back: the broker keeps it in the service's
            # persistent session and delivers it on reconnect
            async with Gateway("127.0.0.1", port, site.product_key) as gateway:
                await gateway.publish(report("b", [(addr, at[1], "1020")]))
                assert (await gateway.reply("b")).res == 1
                assert (await gateway.send(report("c", [(addr, at[2], "1030")]), "c")).res == 1
            return service

    service = asyncio.run(scenario())
    assert service.stats.reconnects >= 1
    assert deducted(db, site.accounts[addr].account_id) == D("19.61")  # 30 kWh × 0.6537
    assert count(db, uplink_messages) == 3


def test_the_group_commit_keeps_the_ingest_state_between_commits(db: Database) -> None:
    """The store's ingestor keeps what each group commit wrote (billing/ingest_state.py) even
    though the commit also writes uplink, live-value and gateway rows around the ingest; a
    recharge between two commits is noticed. No broker needed: the store is called directly."""
    site = make_site(db, ("000000000001", "000000000002"))
    store = UplinkStore(db)
    topic = up_topic(site.product_key, site.serial)
    used = []
    for index in range(1, 7):
        if index == 4:
            recharge(
                db,
                organisation_id=site.org.id,
                account_id=site.accounts["000000000001"].account_id,
                amount="1.00",
                method="cash",
                actor=ACTOR,
                idempotency_key="between-commits",
            )
        at = T0 + timedelta(minutes=15 * index)
        payload = report(f"m-{index}", [(a, at, f"{1000 + 2 * index}.00") for a in site.meter_ids])
        store.commit([receive(topic, payload, time.monotonic())])
        used.append(store.ingestor.state.usable)
        with db.read() as conn:
            assert store.ingestor.state.differences(conn) == []
    if db.engine.dialect.name == "sqlite":
        assert used == [False, True, True, False, True, True]
    else:
        assert not any(used)
    for addr in site.meter_ids:
        assert deducted(db, site.accounts[addr].account_id) == D("7.84")  # 12 kWh × 0.6537
