"""HJ212-2017 uplink end to end on real TCP sockets, on SQLite and PostgreSQL: a test-side
gateway builds its packets with the codec and pushes them to the server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from builders import ACTOR, T0, deducted, tou_tier_definition, wallet
from hj212_world import A1, A2, PASSWORD, SERIAL, Gateway, count, make_site, packet, running
from sqlalchemy import select

from meterdesk.db.database import Database
from meterdesk.devices.codecs.hj212 import Hj212Message, decode_message
from meterdesk.devices.hj212.server import Hj212Server, Hj212Settings, serve_until
from meterdesk.devices.hj212.store import Hj212Store, Packet
from meterdesk.devices.mqtt_store import BatchOutcome
from meterdesk.devices.tables import device_status, gateways
from meterdesk.metering.tables import quarantine, readings
from meterdesk.notifications.configuration import configure_channel
from meterdesk.notifications.tables import notification_outbox
from meterdesk.runtime import Runtime, RuntimeSettings
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration
D = Decimal
LOCAL_0815 = "20261102081500"  # Asia/Shanghai: T0 + 15 min


def test_minute_data_is_billed_once_and_answered_only_after_its_commit(db: Database) -> None:
    site = make_site(db)
    release = threading.Event()
    committed_at: list[float] = []
    seen_at_answer: list[tuple[Decimal, Decimal]] = []
    store = Hj212Store(db)

    def slow_commit(batch: list[Packet]) -> BatchOutcome:
        release.wait(10)
        outcome = store.commit(batch)
        committed_at.append(time.monotonic())
        return outcome

    def on_answer(_: Hj212Message) -> None:  # the database as the answer arrives
        accounts = site.accounts
        seen_at_answer.append(
            (deducted(db, accounts[A1].account_id), deducted(db, accounts[A2].account_id))
        )

    data = packet("20261102081500001", LOCAL_0815, {f"{A1}-Cou": "1010.00", f"{A2}-Cou": "1020"})

    async def scenario() -> None:
        async with running(db, commit=slow_commit) as server:
            assert server.port is not None
            async with Gateway(server.port, on_answer) as gateway:
                await gateway.write(data)
                await asyncio.sleep(0.5)
                assert gateway.answers == []  # held: the batch has not committed
                release.set()
                answer = await gateway.answer("20261102081500001")
                assert gateway.answers[0][0] >= committed_at[0]
                assert answer.fields == (
                    ("QN", "20261102081500001"),
                    ("ST", "91"),
                    ("CN", "9014"),
                    ("PW", PASSWORD),
                    ("MN", SERIAL),
                    ("Flag", "4"),
                )
                assert answer.cp == ()
                # the same packet again: answered again, billed once
                await gateway.send(data, "20261102081500001", count=2)

    asyncio.run(scenario())
    assert seen_at_answer[0] == (D("6.54"), D("13.07"))  # 10 and 20 kWh × 0.6537, committed
    assert deducted(db, site.accounts[A1].account_id) == D("6.54")
    assert deducted(db, site.accounts[A2].account_id) == D("13.07")
    assert wallet(db, site.accounts[A1]) == D("493.46")
    assert count(db, readings) == 4  # two openings and one reading per meter
    with db.read() as conn:
        gateway = conn.execute(select(gateways)).mappings().one()
        status = dict(conn.execute(select(device_status.c.meter_id, device_status.c.state)).all())
    assert gateway["state"] == "online" and gateway["last_seen_at"] is not None
    assert status == {site.meter_ids[A1]: "online", site.meter_ids[A2]: "online"}


def test_history_resent_out_of_order_is_placed_by_time(db: Database) -> None:
    site = make_site(db, definition=tou_tier_definition())
    totals = ["1003.5", "1007.25", "1009.0", "1016.75", "1020.5", "1026.0"]
    local = [f"20261102{10 + 2 * i:02d}0000" for i in range(len(totals))]  # every 2 hours

    def upload(qn: str, at: str, values: dict[str, str], cn: str = "2061") -> bytes:
        return packet(qn, at, {f"{addr}-Cou": total for addr, total in values.items()}, cn=cn)

    async def scenario() -> None:
        async with running(db) as server, Gateway(server.port or 0) as gateway:
            for i, (at, total) in enumerate(zip(local, totals, strict=True)):
                await gateway.send(upload(f"r{i}", at, {A1: total}), f"r{i}")
            # the outage: A2's first and last hour arrive live, the rest is re-sent newest first
            await gateway.send(upload("l0", local[0], {A2: totals[0]}, "2011"), "l0")
            await gateway.send(upload("l5", local[5], {A2: totals[5]}, "2011"), "l5")
            for i in (5, 4, 3, 2, 1, 0):
                await gateway.send(upload(f"h{i}", local[i], {A2: totals[i]}), f"h{i}")

    asyncio.run(scenario())
    expected = deducted(db, site.accounts[A1].account_id)
    assert expected > 0
    assert deducted(db, site.accounts[A2].account_id) == expected
    assert wallet(db, site.accounts[A2]) == wallet(db, site.accounts[A1])


def test_split_frames_several_in_one_write_and_garbage_between(db: Database) -> None:
    site = make_site(db)
    first = packet("q1", "20261102081500", {f"{A1}-Cou": "1001"})
    second = packet("q2", "20261102083000", {f"{A1}-Cou": "1002"})
    third = packet("q3", "20261102084500", {f"{A1}-Cou": "1003", f"{A2}-Cou": "1003"})
    broken = bytearray(packet("q4", "20261102090000", {f"{A1}-Cou": "1999"}))
    broken[-4] ^= 1  # the CRC no longer matches: skipped

    async def scenario() -> int:
        async with running(db) as server, Gateway(server.port or 0) as gateway:
            for byte in first:
                await gateway.write(bytes([byte]))
            await gateway.answer("q1")
            await gateway.write(b"\x00garbage##12" + second + bytes(broken) + b"##\r\n" + third)
            await gateway.answer("q2")
            await gateway.answer("q3")
            await asyncio.sleep(0.2)
            assert gateway.answered("q4") == []
            return server.connection_stats.skipped_bytes

    skipped = asyncio.run(scenario())
    assert skipped >= len(broken) + len(b"\x00garbage##12")
    assert deducted(db, site.accounts[A1].account_id) == D("1.96")  # 3 kWh, not 999
    assert count(db, readings) == 2 + 4


def test_wrong_password_and_unknown_gateway_are_refused_and_store_nothing(db: Database) -> None:
    site = make_site(db)
    items = {f"{A1}-Cou": "1010"}
    wrong = packet("w1", LOCAL_0815, items, pw="654321")
    missing = packet("w2", LOCAL_0815, items, pw=None)
    stranger = packet("w3", LOCAL_0815, items, mn="NOSUCHGATEWAY")
    good = packet("g1", "20261102083000", {f"{A2}-Cou": "1001"})

    async def scenario() -> None:
        async with running(db) as server, Gateway(server.port or 0) as gateway:
            await gateway.write(wrong + missing + stranger)
            await asyncio.sleep(0.2)
            await gateway.send(good, "g1")  # committed after the refused ones
            assert [m.qn for _, m in gateway.answers] == ["g1"]
            assert server.stats.rejected == 3

    asyncio.run(scenario())
    assert deducted(db, site.accounts[A1].account_id) == 0
    with db.read() as conn:
        held = conn.execute(
            select(quarantine.c.organisation_id, quarantine.c.reason_code, quarantine.c.reason)
        ).all()
    # the wrong and missing passwords leave no trace; the unknown gateway is quarantined
    assert held == [
        (
            None,
            "unknown_meter",
            "unknown HJ212 gateway MN 'NOSUCHGATEWAY': register it with uplink hj212",
        )
    ]
    with db.read() as conn:
        raw = conn.execute(select(quarantine.c.payload)).scalar_one()
    assert PASSWORD not in raw and "PW=***" in raw


def test_a_malformed_cp_is_quarantined_with_its_reason_and_answered(db: Database) -> None:
    site = make_site(db)
    bad_time = packet("b1", "20261302081500", {f"{A1}-Cou": "1010"})
    bad_value = packet("b2", LOCAL_0815, {f"{A1}-Cou": "1e3"})
    unknown = packet("b3", LOCAL_0815, {"999999999999-Cou": "5", f"{A2}-Cou": "1010"})

    async def scenario() -> None:
        async with running(db) as server, Gateway(server.port or 0) as gateway:
            for data, qn in ((bad_time, "b1"), (bad_value, "b2"), (unknown, "b3")):
                await gateway.send(data, qn)  # answered: a re-send could not mend it

    asyncio.run(scenario())
    assert deducted(db, site.accounts[A1].account_id) == 0
    assert deducted(db, site.accounts[A2].account_id) == D("6.54")  # the rest of b3
    with db.read() as conn:
        held = conn.execute(
            select(
                quarantine.c.organisation_id, quarantine.c.reason_code, quarantine.c.reason
            ).order_by(quarantine.c.id)
        ).all()
    assert held == [
        (site.org.id, "malformed", "DataTime '20261302081500' is not a date and time"),
        (site.org.id, "malformed", f"{A1}-Cou: '1e3' is not a plain non-negative decimal"),
        (
            site.org.id,
            "unknown_meter",
            "no meter with address '999999999999' in the gateway's organisation",
        ),
    ]


def test_data_time_is_read_in_the_site_zone(db: Database) -> None:
    site = make_site(db, (A1,), timezone="Europe/Berlin")  # UTC+1 in November

    async def scenario() -> None:
        async with running(db) as server, Gateway(server.port or 0) as gateway:
            await gateway.send(packet("z1", "20261102011500", {f"{A1}-Cou": "1010"}), "z1")

    asyncio.run(scenario())
    with db.read() as conn:
        times = conn.execute(
            select(readings.c.measured_at)
            .where(readings.c.meter_id == site.meter_ids[A1])
            .order_by(readings.c.measured_at)
        ).scalars()
        measured = list(times)
    assert measured[-1] == T0 + timedelta(minutes=15)


def test_a_connection_sending_only_garbage_is_closed(db: Database) -> None:
    make_site(db)

    async def scenario() -> None:
        async with running(db, idle_timeout_s=0.5) as server, Gateway(server.port or 0) as gw:
            started = time.monotonic()
            with contextlib.suppress(ConnectionError):  # closed under our feet: the point
                while not gw.closed.is_set():
                    await gw.write(b"##9999 not a packet " * 4)  # bytes, never a packet
                    await asyncio.sleep(0.1)
                    assert time.monotonic() - started < 5, "the garbage connection stayed open"
            await asyncio.wait_for(gw.closed.wait(), 5)
            assert time.monotonic() - started >= 0.5
            assert server.connection_stats.idle_closed == 1

    asyncio.run(scenario())


def test_meterdesk_run_accepts_hj212_gateways(db: Database) -> None:
    site = make_site(db, (A1,))
    settings = RuntimeSettings(hj212=Hj212Settings(port=0, window_s=0.02), dispatch_idle_s=0.2)
    runtime = Runtime(db, settings)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run(stop))
        try:
            deadline = time.monotonic() + 10
            while runtime.hj212 is None or runtime.hj212.port is None:
                assert time.monotonic() < deadline, "the runtime never listened for HJ212"
                await asyncio.sleep(0.05)
            async with Gateway(runtime.hj212.port) as gateway:
                await gateway.send(packet("r1", LOCAL_0815, {f"{A1}-Cou": "1010"}), "r1")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    assert deducted(db, site.accounts[A1].account_id) == D("6.54")


def test_a_control_character_refuses_that_packet_alone(db: Database) -> None:
    # PostgreSQL cannot store (nor take as a parameter) a NUL: one such packet must not fail the
    # group commit of every gateway's packets beside it.
    site = make_site(db)
    items = {f"{A1}-Cou": "1010"}
    batch = [
        Packet("c", decode_message(data), time.monotonic())
        for data in (
            packet("n1", LOCAL_0815, items, mn="GW\x00"),
            packet("n2", LOCAL_0815, {"A\x00-Cou": "1"}),
            packet("ok", LOCAL_0815, items),
        )
    ]

    outcome = Hj212Store(db).commit(batch)

    assert (outcome.stats.rejected, outcome.stats.accepted) == (2, 1)
    assert [decode_message(reply.payload).qn for reply in outcome.replies] == ["n2", "ok"]
    assert deducted(db, site.accounts[A1].account_id) == D("6.54")
    with db.read() as conn:
        held = conn.execute(select(quarantine.c.reason).order_by(quarantine.c.id)).scalars()
        reasons = list(held)
    assert reasons == [
        "unknown HJ212 gateway MN 'GW\\x00': register it with uplink hj212",
        "the packet holds a control character",
    ]


def test_many_connections_each_get_their_own_answers(db: Database) -> None:
    site = make_site(db, (A1,))

    async def one(port: int, minute: int) -> list[str | None]:
        qn = f"c{minute}"
        data = packet(qn, f"2026110208{minute:02d}00", {f"{A1}-Cou": f"{1000 + minute}"})
        async with Gateway(port) as gateway:
            await gateway.send(data, qn)
            await asyncio.sleep(0.1)
            return [m.qn for _, m in gateway.answers]

    async def scenario() -> list[list[str | None]]:
        async with running(db) as server:
            return await asyncio.gather(*(one(server.port or 0, m) for m in range(1, 21)))

    answers = asyncio.run(scenario())
    assert answers == [[f"c{m}"] for m in range(1, 21)]
    assert deducted(db, site.accounts[A1].account_id) == D("13.07")  # 20 kWh in all


def test_an_hj212_gateway_silent_too_long_is_marked_lost_and_announced(
    db: Database, clock: FakeClock
) -> None:
    site = make_site(db, (A1,))
    configure_channel(db, organisation_id=site.org.id, channel="log", provider="log", actor=ACTOR)
    settings = Hj212Settings(port=0, window_s=0.02)
    server = Hj212Server(Hj212Store(db).commit, settings)

    def state() -> str:
        with db.read() as conn:
            return str(conn.execute(select(gateways.c.state)).scalar_one())

    async def until(wanted: str) -> None:
        deadline = time.monotonic() + 10
        while await asyncio.to_thread(state) != wanted:
            assert time.monotonic() < deadline, f"the gateway never became {wanted}"
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        stop = asyncio.Event()
        serving = asyncio.create_task(
            serve_until(db, settings, stop, gateway_check_s=0.05, server=server)
        )
        try:
            await asyncio.wait_for(server.ready.wait(), 10)
            async with Gateway(server.port or 0) as gateway:
                await gateway.send(packet("s1", LOCAL_0815, {f"{A1}-Cou": "1001"}), "s1")
            await until("online")
            clock.advance(timedelta(minutes=16))  # past the 15 minutes of silence allowed
            await until("lost")
        finally:
            stop.set()
            await asyncio.wait_for(serving, 30)

    asyncio.run(scenario())
    with db.read() as conn:
        events = set(conn.execute(select(notification_outbox.c.event_kind)).scalars())
    assert events == {"gateway_offline"}
