"""End to end: a relay trip recorded by ``send_command`` goes through the executor and the real
DL/T 645 driver over a loopback TCP socket to the simulated meter, which checks the password and
the 1C validity deadline on its own clock; the executor confirms it by the next read, whose relay
state comes from status word 3 (04000503, bit 4), and the command log shows every step."""

from __future__ import annotations

import asyncio

import pytest
from builders import ACTOR, T0, make_org

from meterdesk.db.database import Database
from meterdesk.devices.commands import service
from meterdesk.devices.commands.executor import CommandExecutor, ExecutorConfig, Settle
from meterdesk.devices.commands.model import Aspect
from meterdesk.devices.drivers.dlt645 import Dlt645Driver
from meterdesk.devices.transports import TcpTransport
from meterdesk.metering import service as metering
from meterdesk.shared.time import FakeClock
from meterdesk.simulator.config import parse_config
from meterdesk.simulator.meter import ElectricityMeter
from meterdesk.simulator.runtime import Simulation

pytestmark = pytest.mark.integration

SITE = {
    "simulator": {"seed": 11, "zone": "Asia/Shanghai", "start": T0.isoformat()},
    "bus": [{"name": "dlt", "protocol": "dlt645", "listen": "127.0.0.1:0"}],
    "meters": [{"first_address": 1, "count": 2, "bus": "dlt", "money": "80.00"}],
}


def test_relay_trip_reaches_the_simulated_meter_and_is_confirmed_by_status_word_3(
    db: Database, clock: FakeClock
) -> None:
    org = make_org(db)
    spec = metering.MeterSpec(
        number="M1", utility="electricity", kind="single_phase", protocol="dlt645",
        address="000000000001", room_id=org.room_id,
    )  # fmt: skip
    meter_id = metering.create_meter(db, organisation_id=org.id, spec=spec, actor=ACTOR)
    sent = service.send_command(
        db, organisation_id=org.id, meter_id=meter_id, kind="relay_trip", params=None,
        actor=ACTOR, idempotency_key="e2e-trip",
    )  # fmt: skip

    async def scenario() -> None:
        simulation = Simulation(parse_config(SITE))
        await simulation.start()
        transport = None
        try:
            [(_, server)] = simulation.listening
            transport = TcpTransport("127.0.0.1", server.port)
            driver = Dlt645Driver(transport, clock=simulation.clock)
            config = ExecutorConfig(settle={Aspect.RELAY: Settle(0.1, 5.0, 0.2)})
            worker = CommandExecutor(
                db, lambda _target: driver, config=config, clock=simulation.clock
            )
            assert await worker.run_once() == 1
            meters = simulation.by_bus["dlt"]
            assert isinstance(meters[0], ElectricityMeter) and isinstance(
                meters[1], ElectricityMeter
            )
            assert meters[0].engine.relay_open and not meters[1].engine.relay_open
        finally:
            if transport is not None:
                await transport.close()
            await simulation.stop()

    asyncio.run(scenario())
    log = service.command_log(db, organisation_id=org.id, command_id=sent.command.id)
    assert (log.command.status, log.command.reason) == ("confirmed", None)
    assert [e.event for e in log.events] == ["created", "sent", "confirmed"]
    assert log.events[-1].detail == {"state": "meter shows relay open", "sent": True}
    assert "validity_deadline" in log.events[1].detail
