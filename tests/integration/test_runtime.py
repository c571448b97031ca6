"""``meterdesk run``'s Runtime against the simulator on loopback sockets, in accelerated time:
it polls the linked meters into the money core, sends a relay trip through the poller's own bus
connection and confirms it by read-back, reloads its plans when a meter is linked, delivers a
notification and ticks the control loop — all in one process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

import pytest
from builders import ACTOR, T0, make_meter, make_org, make_tariff
from sqlalchemy import Engine, func, select

from meterdesk.billing import accounts as account_service
from meterdesk.db.database import Database
from meterdesk.devices import service as devices
from meterdesk.devices.commands import service as commands
from meterdesk.devices.commands.executor import ExecutorConfig, Settle
from meterdesk.devices.commands.model import Aspect
from meterdesk.devices.poller import PollerSettings
from meterdesk.devices.tables import commands as command_rows
from meterdesk.metering.tables import readings
from meterdesk.notifications import queueing as notifications
from meterdesk.notifications.channels.base import DeliveryResult, OutgoingMessage
from meterdesk.notifications.channels.registry import ChannelRegistry
from meterdesk.notifications.configuration import configure_channel
from meterdesk.notifications.model import Channel
from meterdesk.runtime import Runtime, RuntimeSettings
from meterdesk.simulator.clock import AcceleratedClock
from meterdesk.simulator.config import parse_config
from meterdesk.simulator.meter import ElectricityMeter
from meterdesk.simulator.runtime import Simulation

pytestmark = pytest.mark.integration

SPEED = 60.0  # a simulated minute per real second

SITE = {
    "simulator": {"seed": 5, "zone": "Asia/Shanghai", "start": T0.isoformat(), "speed": SPEED},
    "bus": [{"name": "dlt", "protocol": "dlt645", "listen": "127.0.0.1:0"}],
    "meters": [{"first_address": 1, "count": 2, "bus": "dlt", "energy_kwh": "100"}],
}


@dataclass
class Recorder:
    seen: list[OutgoingMessage] = field(default_factory=list)

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        self.seen.append(message)
        return DeliveryResult(detail="recorded")


def _count(db: Database, meter_id: int) -> int:
    with db.read() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(readings).where(readings.c.meter_id == meter_id)
            ).scalar_one()
        )


def _price_writes(db: Database, meter_id: int) -> list[str]:
    with db.read() as conn:
        found = conn.execute(
            select(command_rows.c.status)
            .where(command_rows.c.meter_id == meter_id, command_rows.c.kind == "write_prices")
            .order_by(command_rows.c.id)
        ).scalars()
        return [str(status) for status in found]


async def _until(check: Callable[[], bool], *, timeout_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout_s
    while not await asyncio.to_thread(check):
        assert loop.time() < give_up, "timed out"
        await asyncio.sleep(0.1)


def test_runtime_polls_commands_reloads_notifies_and_ticks(engine: Engine) -> None:
    clock = AcceleratedClock(T0, SPEED)
    db = Database(engine, clock)
    org = make_org(db)
    m1, m2 = make_meter(db, org, "M1"), make_meter(db, org, "M2")
    opening = account_service.MeterOpening(m2, make_tariff(db, org), Decimal("0"))
    request = account_service.OpenAccount(
        number="A-2", customer_id=org.customer_id, room_id=org.room_id, meters=[opening],
        billing_mode="meter",
    )  # fmt: skip
    account_service.open_account(db, organisation_id=org.id, request=request, actor=ACTOR)
    configure_channel(db, organisation_id=org.id, channel="log", provider="log", actor=ACTOR)
    recorder = Recorder()
    settings = RuntimeSettings(
        speed=SPEED,
        reload_check_s=30.0,
        tick_interval_s=60.0,
        meter_billing_check_s=60.0,
        dispatch_idle_s=0.2,
        poller=PollerSettings(flush_interval_s=30.0),
        executor=ExecutorConfig(idle_s=0.2, settle={Aspect.RELAY: Settle(5.0, 120.0, 10.0)}),
    )
    registry = ChannelRegistry(clock=clock, overrides={Channel.LOG: recorder})
    runtime = Runtime(db, settings, clock=clock, registry=registry)

    async def scenario() -> None:
        simulation = Simulation(parse_config(SITE), clock=clock)
        await simulation.start()
        stop = asyncio.Event()
        running = asyncio.create_task(runtime.run(stop))
        try:
            [(_, server)] = simulation.listening
            spec = devices.BusSpec(
                "dlt", "dlt645", "tcp", f"127.0.0.1:{server.port}", poll_interval_s=60
            )
            bus = await asyncio.to_thread(
                devices.create_bus, db, organisation_id=org.id, spec=spec, actor=ACTOR
            )
            await asyncio.to_thread(
                lambda: devices.link_meter(
                    db, organisation_id=org.id, meter_id=m1, bus_id=bus,
                    address="000000000001", actor=ACTOR,
                )
            )  # fmt: skip
            await _until(lambda: _count(db, m1) >= 2)
            assert runtime.stats.poller_reloads >= 1  # the bus and M1 arrived after the start
            sent = await asyncio.to_thread(
                lambda: commands.send_command(
                    db, organisation_id=org.id, meter_id=m1, kind="relay_trip", params=None,
                    actor=ACTOR, idempotency_key="runtime-trip",
                )
            )  # fmt: skip
            command_id = sent.command.id

            def confirmed() -> bool:
                log = commands.command_log(db, organisation_id=org.id, command_id=command_id)
                return log.command.status == "confirmed"

            await _until(confirmed)
            meter = simulation.by_bus["dlt"][0]
            assert isinstance(meter, ElectricityMeter) and meter.engine.relay_open
            reloads = runtime.stats.poller_reloads
            await asyncio.to_thread(
                lambda: devices.link_meter(
                    db, organisation_id=org.id, meter_id=m2, bus_id=bus,
                    address="000000000002", actor=ACTOR,
                )
            )  # fmt: skip
            await _until(lambda: _count(db, m2) >= 2)  # the opening reading, then a polled one
            assert runtime.stats.poller_reloads > reloads
            # M2 bills itself: once it is on a line, its tariff's prices are written to it.
            await _until(lambda: _price_writes(db, m2) == ["confirmed"])
            second = simulation.by_bus["dlt"][1]
            assert isinstance(second, ElectricityMeter)
            assert second.engine.settings.prices == (Decimal("0.6537"),) * 4

            def enqueue() -> None:
                with db.transaction() as conn:
                    notifications.enqueue_in(
                        conn, organisation_id=org.id, event="recharge_credited",
                        key="runtime-test", customer_id=org.customer_id, at=clock(),
                        params={"amount": "10.00", "balance": "20.00"},
                    )  # fmt: skip

            await asyncio.to_thread(enqueue)
            await _until(lambda: len(recorder.seen) == 1)
            await _until(lambda: runtime.stats.ticks >= 2)
        finally:
            stop.set()
            await running
            await simulation.stop()

    asyncio.run(scenario())
    assert runtime.stats.reads > 0 and runtime.stats.readings_stored > 0
    assert runtime.stats.tick_errors == 0
    log = commands.command_log(db, organisation_id=org.id, command_id=1)
    assert [e.event for e in log.events][-1] == "confirmed"
    assert clock() - T0 > timedelta(minutes=1)
