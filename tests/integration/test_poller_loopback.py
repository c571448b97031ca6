"""The poller on real loopback sockets against the simulator (DL/T 645, Modbus TCP, CJ/T 188):
readings become ledger deductions, device status shows what the meters show, and a relay command
sent through the poller's own bus connection shows up in the next poll."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from builders import (
    ACTOR,
    deducted,
    flat_definition,
    make_meter,
    make_org,
    make_tariff,
    open_account,
    stored_readings,
)
from sqlalchemy import select

from meterdesk.db.database import Database
from meterdesk.devices import service
from meterdesk.devices.poller import DatabaseSink, Poller, PollerSettings
from meterdesk.devices.ports import RelayAction
from meterdesk.devices.status import meter_status
from meterdesk.devices.tables import gateways
from meterdesk.shared.money import round_fen
from meterdesk.shared.time import system_clock
from meterdesk.simulator.config import parse_config
from meterdesk.simulator.runtime import Simulation

pytestmark = pytest.mark.integration
PRICE, WATER_PRICE = Decimal("0.6537"), Decimal("3.45")
SITE: dict[str, Any] = {
    "simulator": {"seed": 3, "zone": "Asia/Shanghai", "speed": 60},
    "bus": [
        {"name": "dlt", "protocol": "dlt645", "listen": "127.0.0.1:0"},
        {"name": "mb", "protocol": "modbus", "listen": "127.0.0.1:0"},
        {"name": "water", "protocol": "cjt188", "listen": "127.0.0.1:0"},
    ],
    "meters": [
        {"first_address": 1, "bus": "dlt", "profile": "constant", "rated_kw": "20", "energy_kwh": "100"},
        {"first_address": 1, "bus": "mb", "profile": "constant", "rated_kw": "20", "energy_kwh": "200",
         "money": "80.00"},
        {"first_address": 1, "bus": "water", "kind": "water", "volume_m3": "10", "rated_flow_m3h": "30"},
    ],
}  # fmt: skip
OPENING = {"dlt": "100", "mb": "200", "water": "10"}
ADDRESS = {"dlt": "000000000001", "mb": "1", "water": "00000000000001"}
PROTOCOL = {"dlt": "dlt645", "mb": "modbus_tcp", "water": "cjt188"}


def wire(db: Database, ports: dict[str, int]) -> tuple[Any, dict[str, int], dict[str, Any]]:
    """Organisation, tariffs, three metered accounts, one gateway and a bus per simulated line."""
    org = make_org(db)
    tariffs = {
        "electricity": make_tariff(db, org, "flat", flat_definition(str(PRICE))),
        "water": make_tariff(db, org, "water", flat_definition(str(WATER_PRICE), utility="water")),
    }
    gateway = service.create_gateway(
        db,
        organisation_id=org.id,
        site_id=org.site_id,
        serial="DTU-1",
        name="DTU",
        uplink="transparent_tcp",
        actor=ACTOR,
    )
    meters, accounts = {}, {}
    for number, name in enumerate(ports, start=1):
        utility = "water" if name == "water" else "electricity"
        meters[name] = make_meter(db, org, f"M{number}", utility=utility)
        spec = service.BusSpec(
            name, PROTOCOL[name], "tcp", f"127.0.0.1:{ports[name]}", gateway, poll_interval_s=1
        )
        bus_id = service.create_bus(db, organisation_id=org.id, spec=spec, actor=ACTOR)
        service.link_meter(
            db, organisation_id=org.id, meter_id=meters[name], bus_id=bus_id, address=ADDRESS[name], actor=ACTOR
        )  # fmt: skip
        opening = [(meters[name], tariffs[utility], OPENING[name])]
        accounts[name] = open_account(db, org, f"A-{number}", opening, credit="500")
    return org, meters, accounts


async def poll_for(db: Database, organisation_id: int, seconds: float) -> Poller:
    """Run the poller; half-way, trip the DL/T 645 meter through the poller's own connection."""
    plans = service.load_poll_plans(db, organisation_id=organisation_id)
    poller = Poller(plans, sink=DatabaseSink(db), settings=PollerSettings(flush_interval_s=0.2))
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(seconds / 2)
    dlt = next(plan for plan in plans if plan.config.protocol == "dlt645")
    deadline = datetime.now(UTC) + timedelta(hours=1)
    await poller.connection(dlt.config.bus_id).driver.relay(
        dlt.meters[0], RelayAction.TRIP, deadline
    )
    await asyncio.sleep(seconds / 2)
    poller.stop()
    await task
    return poller


def test_poller_readings_become_deductions_and_status_shows_the_meters(db: Database) -> None:
    # The poller stamps readings with the real time: open the accounts in real time too, or the
    # interval from the opening reading would span months, each rounded on its own (exact, but
    # not the single rounding this test expects).
    db = Database(db.engine, system_clock)
    simulation = Simulation(parse_config(SITE))

    async def scenario() -> tuple[dict[str, int], Any, dict[str, int], dict[str, Any], Poller]:
        await simulation.start()
        try:
            ports = {bus.name: server.port for bus, server in simulation.listening}
            org, meters, accounts = wire(db, ports)
            return ports, org, meters, accounts, await poll_for(db, org.id, 4.0)
        finally:
            await simulation.stop()

    _ports, _org, meters, accounts, poller = asyncio.run(scenario())
    assert poller.stats.failures == 0 and poller.stats.reads >= 9
    assert max(c.stats.max_in_flight for c in poller.connections.values()) == 1
    for name, meter_id in meters.items():
        stored = stored_readings(db, meter_id)
        assert len(stored) >= 3, name  # the opening reading and at least two polls
        last_total = stored[-1][3]
        assert last_total > Decimal(OPENING[name]), name
        price = WATER_PRICE if name == "water" else PRICE
        expected = round_fen((last_total - Decimal(OPENING[name])) * price)
        assert deducted(db, accounts[name].account_id) == expected, name
    with db.read() as conn:
        status = {name: meter_status(conn, meter_id) for name, meter_id in meters.items()}
        gateway_state = conn.execute(select(gateways.c.state, gateways.c.last_seen_at)).one()
    assert all(s is not None and s.state == "online" and s.last_seen_at for s in status.values())
    assert status["dlt"] is not None and status["dlt"].relay == "open"  # tripped half-way
    assert status["mb"] is not None and status["mb"].relay == "closed"
    assert status["mb"].remaining_money is not None and status["mb"].purchase_count is not None
    assert status["water"] is not None and status["water"].valve == "open"
    assert status["dlt"].live is not None and "voltage_v" in status["dlt"].live
    assert gateway_state.state == "online" and gateway_state.last_seen_at is not None
