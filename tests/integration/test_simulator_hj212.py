"""The simulator's HJ212 gateway against ``ingest-hj212``'s server, in-process, on real TCP
sockets, on SQLite and PostgreSQL: scheduled minute data for 3 meters is billed and answered;
while the server is down the gateway buffers, and the history is billed once when it is back;
garbage between packets is skipped; ``meterdesk simulate --hj212-server`` reaches the server."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from subprocess import PIPE, STDOUT
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from builders import deducted, wallet
from hj212_world import A1, A2, PASSWORD, SERIAL, make_site
from sqlalchemy import select

from meterdesk.db.database import Database
from meterdesk.devices.codecs.hj212 import Pairs
from meterdesk.devices.hj212.server import Hj212Server, Hj212Settings
from meterdesk.devices.hj212.store import Hj212Store
from meterdesk.devices.tables import gateways
from meterdesk.metering.tables import readings
from meterdesk.shared.money import round_fen
from meterdesk.simulator.cli import DEFAULT_HJ212_GATEWAY
from meterdesk.simulator.config import parse_config
from meterdesk.simulator.hj212_gateway import Hj212Gateway
from meterdesk.simulator.runtime import Simulation

pytestmark = pytest.mark.integration
A3 = "000000000003"
PRICE = Decimal("0.6537")  # the flat tariff of builders.make_tariff
CREDIT = Decimal(500)  # what make_site's accounts start with
OPENING = Decimal(1000)  # the accounts open with the register at 1000 kWh
SHANGHAI = ZoneInfo("Asia/Shanghai")


def site_document(port: int, *, garbage: bool = False) -> dict[str, Any]:
    """Three constant-load meters at 1000 kWh on one HJ212 gateway; a simulated minute every
    half second, one read a minute."""
    document: dict[str, Any] = {
        "simulator": {
            "seed": 3,
            "speed": 120,
            "zone": "Asia/Shanghai",  # the site's zone: DataTime is read in it
            "start": "2026-11-02T08:01:00+08:00",  # a minute after the accounts opened (T0)
        },
        "bus": [{"name": "dlt", "protocol": "dlt645"}],
        "gateway": [
            {
                "sn": SERIAL,
                "uplink": "hj212",
                "server": f"127.0.0.1:{port}",
                "password": PASSWORD,
                "interval_s": 60,
                "resend_after_s": 1,
            }
        ],
        "meters": [
            {
                "first_address": 1,
                "count": 3,
                "bus": "dlt",
                "gateway": SERIAL,
                "profile": "constant",
                "rated_kw": 6,
                "energy_kwh": "1000",
            }
        ],
    }
    if garbage:  # junk bytes before every packet, for the server's scanner
        document["fault"] = [{"kind": "garbage", "gateway": SERIAL, "at_s": 0, "value": 40}]
    return document


@asynccontextmanager
async def platform(db: Database, port: int = 0) -> AsyncIterator[Hj212Server]:
    settings = Hj212Settings(port=port, idle_timeout_s=30, window_s=0.02)
    server = Hj212Server(Hj212Store(db).commit, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(server.run(stop))
    await asyncio.wait_for(server.ready.wait(), 10)
    try:
        yield server
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.01)


class Sent:
    """Every packet the gateway queued: QN → (DataTime, items)."""

    def __init__(self, gateway: Hj212Gateway) -> None:
        self.packets: dict[str, tuple[str, dict[str, str]]] = {}
        add = gateway.outbox.add

        def recording(at: str, items: Pairs) -> str:
            qn = add(at, items)
            self.packets[qn] = (at, dict(items))
            return qn

        gateway.outbox.add = recording  # type: ignore[method-assign]


def stored(db: Database, meter_id: int) -> dict[str, Decimal]:
    """The meter's readings after its opening: local DataTime → total register."""
    with db.read() as conn:
        rows = conn.execute(
            select(readings.c.measured_at, readings.c.register_total)
            .where(readings.c.meter_id == meter_id)
            .order_by(readings.c.measured_at)
        ).all()
    return {
        at.astimezone(SHANGHAI).strftime("%Y%m%d%H%M%S"): Decimal(total) for at, total in rows[1:]
    }


def test_the_simulated_gateway_is_billed_buffers_while_the_server_is_down_and_resends(
    db: Database,
) -> None:
    site = make_site(db, (A1, A2, A3))

    async def scenario() -> tuple[Sent, set[str]]:
        simulation: Simulation | None = None
        try:
            async with platform(db) as first:
                port = first.port
                assert port is not None
                config = parse_config(site_document(port))
                fast = {"reconnect_s": 0.2, "reconnect_max_s": 0.4}
                hj212 = dataclasses.replace(config.gateways[0], **fast)
                simulation = Simulation(dataclasses.replace(config, gateways=(hj212,)))
                gateway = simulation.gateways[SERIAL]
                assert isinstance(gateway, Hj212Gateway)
                sent, outbox = Sent(gateway), gateway.outbox
                await simulation.start()
                await until(lambda: outbox.answered_count >= 3, "3 scheduled packets answered")
                await until(lambda: outbox.pending_count == 0, "the buffer empties")
            # the server has stopped: the gateway keeps reading, buffers and redials
            await until(lambda: not gateway.connected.is_set(), "the gateway sees the outage")
            answered_before, before = outbox.answered_count, set(sent.packets)
            await until(lambda: outbox.pending_count >= 4, "4 reads buffered")
            buffered = {qn for qn in sent.packets if qn not in before}
            assert outbox.answered_count == answered_before
            async with platform(db, port):  # back on the same port
                await until(lambda: all(not outbox.is_pending(qn) for qn in buffered), "history")
                await until(lambda: outbox.pending_count == 0, "the buffer empties again")
            return sent, buffered
        finally:
            if simulation is not None:
                await simulation.stop()

    sent, buffered = asyncio.run(scenario())
    history_times = {sent.packets[qn][0] for qn in buffered}
    for addr in (A1, A2, A3):
        readings_by_time = stored(db, site.meter_ids[addr])
        sent_by_time = {at: Decimal(items[f"{addr}-Cou"]) for at, items in sent.packets.values()}
        assert history_times <= set(readings_by_time)  # the outage's reads were billed
        assert all(sent_by_time[at] == total for at, total in readings_by_time.items())
        moved = max(readings_by_time.values()) - OPENING
        assert moved > 0
        # billed once: what the register moved × the price, nothing for the re-sent packets
        charged = round_fen(moved * PRICE)
        assert deducted(db, site.accounts[addr].account_id) == charged
        assert wallet(db, site.accounts[addr]) == CREDIT - charged


def test_garbage_between_packets_is_skipped_by_the_server(db: Database) -> None:
    site = make_site(db, (A1, A2, A3))

    async def scenario() -> int:
        async with platform(db) as server:
            simulation = Simulation(parse_config(site_document(server.port or 0, garbage=True)))
            gateway = simulation.gateways[SERIAL]
            assert isinstance(gateway, Hj212Gateway)
            await simulation.start()
            try:
                await until(lambda: gateway.outbox.answered_count >= 2, "2 packets answered")
            finally:
                await simulation.stop()
            return server.connection_stats.skipped_bytes

    skipped = asyncio.run(scenario())
    assert skipped >= 2 * 40
    assert deducted(db, site.accounts[A2].account_id) > 0


def test_meterdesk_simulate_hj212_server_pushes_to_the_platform(db: Database) -> None:
    make_site(db, (A1, A2, A3))
    with db.transaction() as conn:  # the MN the --hj212-server gateway sends
        conn.execute(gateways.update().values(serial=DEFAULT_HJ212_GATEWAY))
    command = [str(Path(sys.executable).with_name("meterdesk")), "simulate", "--meters", "3"]
    command += ["--hj212-password", PASSWORD, "--speed", "120", "--seed", "3"]
    environment = os.environ | {"TZ": "Asia/Shanghai"}  # the gateway's clock: the site's zone

    async def scenario() -> list[str]:
        async with platform(db) as server:
            where = ["--hj212-server", f"127.0.0.1:{server.port}"]
            process = await asyncio.create_subprocess_exec(
                *command, *where, stdout=PIPE, stderr=STDOUT, env=environment
            )
            try:
                assert process.stdout is not None
                banner = [(await process.stdout.readline()).decode() for _ in range(3)]
                await until(lambda: server.stats.replies_sent >= 2, "2 packets answered")
                process.send_signal(signal.SIGINT)
                assert await asyncio.wait_for(process.wait(), 10) == 0
                return banner
            finally:
                if process.returncode is None:
                    process.kill()

    banner = asyncio.run(scenario())
    assert any("hj212 gateway MN HJ0001: 6 meters" in line for line in banner), banner
    with db.read() as conn:
        state = conn.execute(select(gateways.c.state, gateways.c.last_seen_at)).one()
    assert state[0] == "online" and state[1] is not None
