"""End to end on the simulator: a meter of a platform-billed tenant with money trips by itself
(on the simulator's side, as local protection or a technician would; the platform sent
nothing). Its read shows relay open (status word 3), the control tick sends the close through
the control loop's outbox, and the executor closes the simulated relay over DL/T 645 and
confirms it by reading status word 3 back; the next tick finds nothing to do."""

from __future__ import annotations

import asyncio

import pytest
from builders import ACTOR, make_org, make_tariff, open_account
from sqlalchemy import select

from meterdesk.billing import control_tick
from meterdesk.db.database import Database
from meterdesk.devices.commands import device_state, service
from meterdesk.devices.commands.executor import CommandExecutor, ExecutorConfig, Settle
from meterdesk.devices.commands.model import Aspect
from meterdesk.devices.drivers.dlt645 import Dlt645Driver
from meterdesk.devices.ports import MeterAddress
from meterdesk.devices.tables import commands
from meterdesk.devices.transports import TcpTransport
from meterdesk.metering import service as metering
from meterdesk.shared.time import FakeClock
from meterdesk.simulator.config import parse_config
from meterdesk.simulator.meter import ElectricityMeter
from meterdesk.simulator.prepaid import RelayCommand
from meterdesk.simulator.runtime import Simulation

pytestmark = pytest.mark.integration

ADDRESS = "000000000001"


def test_a_meter_that_trips_by_itself_is_closed_again_and_confirmed_by_read_back(
    db: Database, clock: FakeClock
) -> None:
    org = make_org(db)
    tariff = make_tariff(db, org)
    spec = metering.MeterSpec(
        number="M1", utility="electricity", kind="single_phase", protocol="dlt645",
        address=ADDRESS, room_id=org.room_id,
    )  # fmt: skip
    meter_id = metering.create_meter(db, organisation_id=org.id, spec=spec, actor=ACTOR)
    open_account(db, org, "A-1", [(meter_id, tariff, "0")], credit="3000")
    site = {
        "simulator": {"seed": 5, "zone": "Asia/Shanghai", "start": clock.now.isoformat()},
        "bus": [{"name": "dlt", "protocol": "dlt645", "listen": "127.0.0.1:0"}],
        "meters": [{"first_address": 1, "count": 1, "bus": "dlt", "billing": "platform"}],
    }
    address = MeterAddress(meter_id, "dlt645", ADDRESS)
    ticks: list[int] = []

    async def scenario() -> None:
        simulation = Simulation(parse_config(site))
        await simulation.start()
        transport = None
        try:
            [(_, server)] = simulation.listening
            transport = TcpTransport("127.0.0.1", server.port)
            driver = Dlt645Driver(transport, clock=simulation.clock)
            [meter] = simulation.by_bus["dlt"]
            assert isinstance(meter, ElectricityMeter)
            meter.engine.command(RelayCommand.TRIP)  # the meter's side only
            await _read(db, driver, address)  # as the poller would
            ticks.append(control_tick.tick(db, now=clock.now).reasserted)
            config = ExecutorConfig(settle={Aspect.RELAY: Settle(0.1, 5.0, 0.2)})
            worker = CommandExecutor(
                db, lambda _target: driver, config=config, clock=simulation.clock
            )
            assert await worker.run_once() == 1
            assert not meter.engine.relay_open
            await _read(db, driver, address)
            ticks.append(control_tick.tick(db, now=clock.now).reasserted)
        finally:
            if transport is not None:
                await transport.close()
            await simulation.stop()

    asyncio.run(scenario())
    assert ticks == [1, 0]
    with db.read() as conn:
        command_id = conn.execute(select(commands.c.id)).scalar_one()
    log = service.command_log(db, organisation_id=org.id, command_id=command_id)
    assert (log.command.kind, log.command.status) == ("relay_close", "confirmed")
    assert log.command.created_by == "system:control"
    assert log.command.context["why"] == "meter showed relay open while supply is on"
    assert [e.event for e in log.events] == ["created", "sent", "confirmed"]
    assert log.events[-1].detail == {"state": "meter shows relay closed", "sent": True}


async def _read(db: Database, driver: Dlt645Driver, address: MeterAddress) -> None:
    snapshot = await driver.read(address)
    with db.transaction() as conn:
        device_state.save_snapshot(conn, snapshot, snapshot.measured_at)
