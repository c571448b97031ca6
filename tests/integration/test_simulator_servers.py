"""The simulator on real loopback sockets: DL/T 645 and CJ/T 188 through the codecs, Modbus
through pymodbus's own client (TCP and RTU framing), comm faults, and ``meterdesk simulate``."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pymodbus import FramerType
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from meterdesk.devices.codecs import cjt188 as cj
from meterdesk.devices.codecs import dlt645 as d
from meterdesk.simulator.config import parse_config
from meterdesk.simulator.meter import ElectricityMeter, WaterMeter
from meterdesk.simulator.runtime import Simulation

pytestmark = pytest.mark.integration
T = TypeVar("T")
SITE: dict[str, Any] = {
    "simulator": {"seed": 5, "zone": "Asia/Shanghai"},
    "bus": [
        {"name": "dlt", "protocol": "dlt645", "listen": "127.0.0.1:0"},
        {"name": "mb", "protocol": "modbus", "listen": "127.0.0.1:0"},
        {"name": "rtu", "protocol": "modbus-rtu", "listen": "127.0.0.1:0"},
        {"name": "water", "protocol": "cjt188", "listen": "127.0.0.1:0"},
    ],
    "meters": [
        {"first_address": 1, "count": 3, "bus": "dlt", "money": "80.00"},
        {"first_address": 1, "count": 2, "bus": "mb", "money": "80.00"},
        {"first_address": 1, "count": 2, "bus": "rtu"},
        {"first_address": 1, "count": 2, "bus": "water", "kind": "water", "valve_delay_s": 0.5},
    ],
}


@asynccontextmanager
async def running() -> AsyncIterator[tuple[Simulation, dict[str, int]]]:
    simulation = Simulation(parse_config(SITE))
    await simulation.start()
    try:
        yield simulation, {bus.name: server.port for bus, server in simulation.listening}
    finally:
        await simulation.stop()


def run(scenario: Callable[[Simulation, dict[str, int]], Awaitable[T]]) -> T:
    async def main() -> T:
        async with running() as (simulation, ports):
            return await scenario(simulation, ports)

    return asyncio.run(main())


async def exchange(port: int, request: bytes, decoder: Any, wait_s: float = 2.0) -> Any:
    """Send one request on a fresh connection; the first decoded frame, or None on silence."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                chunk = await asyncio.wait_for(reader.read(4096), left)
            except TimeoutError:
                return None
            if not chunk:
                return None
            if frames := decoder.feed(chunk):
                return frames[0]
        return None
    finally:
        writer.close()
        await writer.wait_closed()


async def dlt(port: int, frame: d.Dlt645Frame, wait_s: float = 2.0) -> d.Dlt645Frame | None:
    return await exchange(port, d.encode_frame(frame), d.Dlt645Decoder(), wait_s)  # type: ignore[no-any-return]


def electricity(simulation: Simulation, bus: str, address: int) -> ElectricityMeter:
    meter = simulation.meter(address, bus=bus)
    assert isinstance(meter, ElectricityMeter)
    return meter


# --- DL/T 645 -------------------------------------------------------------------------------


def test_dlt645_reads_energy_and_trips_through_the_socket() -> None:
    async def scenario(simulation: Simulation, ports: dict[str, int]) -> None:
        got = await dlt(ports["dlt"], d.read_request("000000000002", 0x0000FF00))
        assert got is not None
        block = d.parse_read_reply(got).value()
        assert isinstance(block, tuple)
        total, *bands = block
        assert total == sum(bands) > 0
        deadline = datetime.now(simulation.config.zone) + timedelta(minutes=5)
        trip = d.relay_control_request(
            "000000000002", d.RelayAction.TRIP, deadline=deadline, zone=simulation.config.zone,
            password=d.Password(2, "000000"), operator_code="00000000",
        )  # fmt: skip
        confirmed = await dlt(ports["dlt"], trip)
        assert confirmed is not None and confirmed.control == 0x9C
        assert electricity(simulation, "dlt", 2).engine.relay_open
        assert not electricity(simulation, "dlt", 1).engine.relay_open

    run(scenario)


def test_a_bus_observer_sees_each_request_as_it_arrives_and_cannot_break_the_reply() -> None:
    async def scenario(simulation: Simulation, ports: dict[str, int]) -> None:
        [server] = [server for bus, server in simulation.listening if bus.name == "dlt"]
        seen: list[d.Dlt645Frame] = []

        def observe(frame: d.Dlt645Frame) -> None:
            seen.append(frame)
            raise RuntimeError("a broken observer")

        server.observer = observe  # type: ignore[attr-defined]
        got = await dlt(ports["dlt"], d.read_request("000000000001", 0x00000000))
        assert got is not None and d.parse_read_reply(got).value() is not None  # still answered
        assert [(f.address, f.function) for f in seen] == [("000000000001", d.Function.READ)]

    run(scenario)


def test_dlt645_silence_for_absent_and_offline_meters() -> None:
    async def scenario(simulation: Simulation, ports: dict[str, int]) -> None:
        assert await dlt(ports["dlt"], d.read_request("000000000009", 0), wait_s=0.5) is None
        electricity(simulation, "dlt", 3).faults.offline = True
        assert await dlt(ports["dlt"], d.read_request("000000000003", 0), wait_s=0.5) is None

    run(scenario)


def test_dlt645_reply_after_garbage_and_late_when_slow() -> None:
    async def scenario(simulation: Simulation, ports: dict[str, int]) -> None:
        meter = electricity(simulation, "dlt", 1)
        meter.faults.garbage_bytes, meter.faults.reply_delay_s = 40, 0.4
        started = time.monotonic()
        got = await dlt(ports["dlt"], d.read_request("000000000001", 0x02010100))
        assert got is not None and time.monotonic() - started >= 0.4
        assert Decimal(200) < d.parse_read_reply(got).value() < Decimal(240)  # type: ignore[operator]

    run(scenario)


def test_dlt645_one_request_at_a_time_on_the_line() -> None:
    async def scenario(simulation: Simulation, ports: dict[str, int]) -> None:
        electricity(simulation, "dlt", 1).faults.reply_delay_s = 0.3
        started = time.monotonic()
        replies = await asyncio.gather(
            *(dlt(ports["dlt"], d.read_request("000000000001", 0)) for _ in range(3))
        )
        assert all(replies) and time.monotonic() - started >= 0.9

    run(scenario)


# --- Modbus ---------------------------------------------------------------------------------


async def modbus_client(port: int, framer: FramerType = FramerType.SOCKET) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, framer=framer, timeout=1, retries=0)
    assert await client.connect()
    return client


def test_modbus_tcp_energy_relay_and_recharge_with_the_purchase_counter() -> None:
    async def scenario(simulation: Simulation, ports: dict[str, int]) -> None:
        client = await modbus_client(ports["mb"])
        try:
            energy = await client.read_holding_registers(0, count=10, device_id=2)
            values = client.convert_from_registers(energy.registers, client.DATATYPE.UINT32)
            assert isinstance(values, list) and values[0] == sum(values[1:]) > 0
            assert not (await client.write_register(0x24, 0x1A, device_id=2)).isError()
            assert (await client.read_holding_registers(0x23, count=1, device_id=2)).registers == [
                1
            ]
            recharge = [0, 2500, 1]
            assert not (await client.write_registers(0x40, recharge, device_id=2)).isError()
            replay = await client.write_registers(0x40, recharge, device_id=2)
            assert replay.isError() and replay.exception_code == 3
            meter = electricity(simulation, "mb", 2)
            assert meter.engine.purchase_count == 1 and meter.engine.money > Decimal("100")
            gap = await client.read_holding_registers(0x13, count=1, device_id=2)
            assert gap.isError() and gap.exception_code == 2
        finally:
            client.close()

    run(scenario)


def test_modbus_take_back_needs_the_next_count_and_money_the_meter_holds() -> None:
    """退电 at 0044H: amount (UINT32, 0.01 CNY) + take-back count in one write; 0047H counts
    what the meter took. A replay, a gap, more than the meter holds or half the block answer
    exception 03 and change nothing; the purchase counter is never touched."""

    async def scenario(simulation: Simulation, ports: dict[str, int]) -> None:
        client = await modbus_client(ports["mb"])
        meter = electricity(simulation, "mb", 1)
        try:
            before = meter.engine.money
            assert not (await client.write_registers(0x44, [0, 3000, 1], device_id=1)).isError()
            taken = before - meter.engine.money  # the meter also spends a little meanwhile
            assert Decimal("30.00") <= taken < Decimal("30.01")
            counter = await client.read_holding_registers(0x47, count=1, device_id=1)
            assert counter.registers == [1]
            held = int(meter.engine.displayed_money * 100)
            for refused in ([0, 3000, 1], [0, 100, 3], [held >> 16, (held & 0xFFFF) + 1, 2]):
                answer = await client.write_registers(0x44, refused, device_id=1)
                assert answer.isError() and answer.exception_code == 3, refused
            half = await client.write_registers(0x44, [0, 100], device_id=1)
            assert half.isError() and half.exception_code == 3
            assert before - meter.engine.money < Decimal("30.01")  # nothing more was taken
            assert (meter.engine.take_back_count, meter.engine.purchase_count) == (1, 0)
        finally:
            client.close()

    run(scenario)


def test_modbus_absent_unit_and_offline_meter_are_silent() -> None:
    async def scenario(simulation: Simulation, ports: dict[str, int]) -> None:
        client = await modbus_client(ports["mb"])
        try:
            with pytest.raises(ModbusIOException):
                await client.read_holding_registers(0, count=2, device_id=9)
            electricity(simulation, "mb", 1).faults.offline = True
            with pytest.raises(ModbusIOException):
                await client.read_holding_registers(0, count=2, device_id=1)
        finally:
            client.close()

    run(scenario)


def test_modbus_rtu_framing_over_tcp() -> None:
    async def scenario(simulation: Simulation, ports: dict[str, int]) -> None:
        client = await modbus_client(ports["rtu"], FramerType.RTU)
        try:
            voltage = await client.read_holding_registers(0x0B, count=1, device_id=2)
            assert 2000 <= voltage.registers[0] <= 2400
        finally:
            client.close()

    run(scenario)


# --- CJ/T 188 -------------------------------------------------------------------------------


async def water(port: int, frame: cj.Cjt188Frame) -> cj.Cjt188Frame | None:
    return await exchange(port, cj.encode_frame(frame), cj.Cjt188Decoder())  # type: ignore[no-any-return]


def test_cjt188_reads_volume_and_moves_the_valve_after_its_delay() -> None:
    async def scenario(simulation: Simulation, ports: dict[str, int]) -> None:
        zone = simulation.config.zone
        got = await water(ports["water"], cj.read_meter_request("00000000000002"))
        assert got is not None and cj.parse_read_meter_reply(got, zone=zone).volume_m3 > 0
        close = cj.valve_control_request("00000000000002", cj.ValveCommand.CLOSE)
        assert (ack := await water(ports["water"], close)) is not None and ack.control == 0x84
        await asyncio.sleep(0.7)
        got = await water(ports["water"], cj.read_meter_request("00000000000002"))
        assert got is not None
        assert cj.parse_read_meter_reply(got, zone=zone).status.valve is cj.ValveState.CLOSED
        meter = simulation.meter(2, bus="water")
        assert isinstance(meter, WaterMeter) and meter.valve.position.value == "closed"

    run(scenario)


# --- faults on a schedule ------------------------------------------------------------------


def test_scheduled_faults_start_and_end_in_simulated_time() -> None:
    document = {
        "simulator": {"speed": 10},
        "bus": [{"name": "dlt", "protocol": "dlt645"}],
        "meters": [{"first_address": 1, "count": 2, "bus": "dlt"}],
        "fault": [
            {"kind": "offline", "bus": "dlt", "address": 1, "at_s": 2, "duration_s": 4},
            {"kind": "rollover", "bus": "dlt", "address": 2, "at_s": 1, "value": 0.5},
        ],
    }

    async def scenario() -> None:
        simulation = Simulation(parse_config(document))
        first, second = (electricity(simulation, "dlt", k) for k in (1, 2))
        await simulation.start()
        try:
            await asyncio.sleep(0.35)  # 3.5 simulated seconds
            assert first.faults.offline
            assert second.energy_registers()[0] >= Decimal("999999.50")
            await asyncio.sleep(0.45)  # 8 simulated seconds
            assert not first.faults.offline
        finally:
            await simulation.stop()

    asyncio.run(scenario())


# --- the command ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_meterdesk_simulate_listens_and_stops_on_sigint() -> None:
    port = free_port()
    command = [str(Path(sys.executable).with_name("meterdesk")), "simulate"]
    command += ["--dlt645-tcp", f"127.0.0.1:{port}", "--meters", "2", "--seed", "3"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy()
    ) as process:
        try:
            assert process.stdout is not None
            banner = [process.stdout.readline() for _ in range(3)]
            assert any(f"127.0.0.1:{port}" in line for line in banner), banner
            got = asyncio.run(dlt(port, d.read_request("000000000002", 0x04000401)))
            assert got is not None and d.parse_read_reply(got).value() == "000000000002"
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
