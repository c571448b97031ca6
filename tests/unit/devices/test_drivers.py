"""Drivers against fake lines whose meters answer with the codecs' own reply builders."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest

from meterdesk.devices.codecs import cjt188 as w
from meterdesk.devices.codecs import dlt645 as c
from meterdesk.devices.codecs.modbus_map import load_map
from meterdesk.devices.drivers import RetryPolicy, UnsupportedCommandError
from meterdesk.devices.drivers.cjt188 import Cjt188Driver
from meterdesk.devices.drivers.dlt645 import Dlt645Driver
from meterdesk.devices.drivers.modbus import ModbusDriver, PymodbusPort, read_plan
from meterdesk.devices.drivers.registry import BusConfig, open_bus
from meterdesk.devices.ports import (
    DeviceError,
    DeviceRefusedError,
    DeviceTimeoutError,
    MeterAddress,
    RelayAction,
    ValveAction,
)
from meterdesk.devices.transports import (
    DeviceConnectionError,
    FakeModbusPort,
    FakeTransport,
    ModbusRefusedError,
)

D = Decimal
NOW = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)  # 08:00 in Shanghai
SHANGHAI = ZoneInfo("Asia/Shanghai")
FAST = RetryPolicy(timeout_s=0.05, attempts=3, backoff_s=0.0)


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


def clock() -> datetime:
    return NOW


# --- DL/T 645 -------------------------------------------------------------------------------


@dataclass
class Dlt645Meter:
    """A meter on a fake line, answering with the codec's reply builders."""

    address: str = "000000000001"
    values: dict[int, c.DataValue] = field(default_factory=dict)
    password: str = "123456"  # noqa: S105 - the fake meter's relay password
    silent_for: int = 0  # requests ignored before answering
    relay_commands: list[c.RelayCommand] = field(default_factory=list)
    writes: list[c.WriteCommand] = field(default_factory=list)
    time_syncs: list[datetime] = field(default_factory=list)

    def respond(self, raw: bytes) -> bytes | None:
        (frame,) = c.Dlt645Decoder().feed(raw)
        if frame.address == c.BROADCAST_ADDRESS:
            self.time_syncs.append(c.parse_time_sync_request(frame, SHANGHAI))
            return None
        if self.silent_for > 0 or frame.address != self.address:
            self.silent_for -= 1
            return None
        return c.encode_frame(self._answer(frame))

    def _answer(self, frame: c.Dlt645Frame) -> c.Dlt645Frame:
        if frame.function == c.Function.READ:
            di, _ = c.parse_read_request(frame)
            if di not in self.values:
                return c.error_reply(self.address, frame.function, c.ErrorStatus.NO_SUCH_DATA)
            return c.read_value_reply(self.address, di, self.values[di])
        if frame.function == c.Function.RELAY_CONTROL:
            command = c.parse_relay_control_request(frame, SHANGHAI)
            if command.password.code != self.password or command.deadline < NOW:
                return c.error_reply(self.address, frame.function, c.ErrorStatus.UNAUTHORISED)
            self.relay_commands.append(command)
        else:
            self.writes.append(c.parse_write_request(frame))
        return c.normal_reply(self.address, frame.function)


ELECTRIC = MeterAddress(7, "dlt645", "000000000001", {"password": "123456"})
FULL_VALUES: dict[int, c.DataValue] = {
    0x00000000: D("1234.56"),
    0x0000FF00: (D("1234.56"), D("100.00"), D("400.00"), D("500.00"), D("234.56")),
    0x02010100: D("220.1"),
    0x02020100: D("1.234"),
    0x02030000: D("0.2716"),
    0x02060000: D("0.998"),
    0x02800002: D("50.00"),
    0x04000503: c.StatusWord3.build(relay_open=True, protected=True),
    0x00900200: D("12.34"),
}


def dlt645(meter: Dlt645Meter) -> tuple[Dlt645Driver, FakeTransport]:
    line = FakeTransport(meter.respond)
    return Dlt645Driver(line, retry=FAST, clock=clock), line


def test_dlt645_read_gives_total_live_values_relay_and_money() -> None:
    driver, _ = dlt645(Dlt645Meter(values=FULL_VALUES))
    snapshot = run(driver.read(ELECTRIC))
    assert snapshot.meter_id == 7 and snapshot.measured_at == NOW
    assert snapshot.total == D("1234.56") and snapshot.bands is None
    assert (snapshot.voltage_v, snapshot.current_a, snapshot.power_kw) == (
        D("220.1"),
        D("1.234"),
        D("0.2716"),
    )
    assert (snapshot.power_factor, snapshot.frequency_hz) == (D("0.998"), D("50.00"))
    assert snapshot.relay == "open" and snapshot.protected is True
    assert snapshot.remaining_money == D("12.34")


def test_dlt645_band_meters_are_read_with_the_block() -> None:
    driver, line = dlt645(Dlt645Meter(values=FULL_VALUES))
    meter = MeterAddress(7, "dlt645", "000000000001", {"has_band_registers": "1", "live": "0"})
    snapshot = run(driver.read(meter))
    assert snapshot.total == D("1234.56")
    assert snapshot.bands == {
        "sharp": D(100),
        "peak": D(400),
        "flat": D(500),
        "valley": D("234.56"),
    }
    assert snapshot.voltage_v is None
    assert len(line.written) == 3  # block, status word 3, remaining money


def test_dlt645_items_the_meter_lacks_are_none_but_the_total_is_required() -> None:
    driver, _ = dlt645(Dlt645Meter(values={0x00000000: D("5.00")}))
    snapshot = run(driver.read(ELECTRIC))
    assert snapshot.total == D("5.00")
    assert (
        snapshot.relay is None and snapshot.remaining_money is None and snapshot.voltage_v is None
    )
    empty, _ = dlt645(Dlt645Meter(values={}))
    with pytest.raises(DeviceRefusedError, match="NO_SUCH_DATA"):
        run(empty.read(ELECTRIC))


def test_dlt645_timeouts_are_retried_then_reported() -> None:
    meter = Dlt645Meter(values={0x00000000: D("5.00")}, silent_for=2)
    driver, line = dlt645(meter)
    assert run(driver.read(MeterAddress(7, "dlt645", meter.address, {"live": "0"}))).total == D(
        "5.00"
    )
    assert line.stats.timeouts == 2
    silent, _ = dlt645(Dlt645Meter(silent_for=100))
    with pytest.raises(DeviceTimeoutError):
        run(silent.read(ELECTRIC))


def test_dlt645_relay_sends_deadline_in_the_meter_zone_and_password_from_options() -> None:
    meter = Dlt645Meter()
    driver, _ = dlt645(meter)
    deadline = NOW + timedelta(minutes=5)
    run(driver.relay(ELECTRIC, RelayAction.TRIP, deadline))
    (command,) = meter.relay_commands
    assert command.action == c.RelayAction.TRIP and command.deadline == deadline
    assert command.deadline.astimezone(SHANGHAI).hour == 8
    assert command.password == c.Password(2, "123456")


def test_dlt645_refused_relay_carries_the_meters_reason() -> None:
    driver, _ = dlt645(Dlt645Meter(password="999999"))  # noqa: S106 - a wrong one
    with pytest.raises(DeviceRefusedError, match="UNAUTHORISED"):
        run(driver.relay(ELECTRIC, RelayAction.CLOSE, NOW + timedelta(minutes=5)))
    expired, _ = dlt645(Dlt645Meter())
    with pytest.raises(DeviceRefusedError):
        run(expired.relay(ELECTRIC, RelayAction.CLOSE, NOW - timedelta(minutes=1)))


def test_dlt645_writes_limits_and_prices_with_authorisation() -> None:
    meter = Dlt645Meter()
    driver, line = dlt645(meter)

    async def scenario() -> None:
        await driver.write_limits(ELECTRIC, {"alarm_1": D("20.00"), "overdraft_limit": D("5.00")})
        await driver.write_prices(ELECTRIC, {"peak": D("1.0500"), "valley": D("0.3200")})
        sent = len(line.written)
        with pytest.raises(UnsupportedCommandError):
            await driver.write_limits(ELECTRIC, {"alarm_9": D(1)})
        assert len(line.written) == sent

    run(scenario())
    assert [(w.di, c.decode_value(w.di, w.value)) for w in meter.writes] == [
        (0x04001001, D("20.00")),
        (0x04001003, D("5.00")),
        (0x04050102, D("1.0500")),
        (0x04050104, D("0.3200")),
    ]


def test_dlt645_clock_sync_is_one_broadcast_without_answer() -> None:
    meter = Dlt645Meter()
    driver, line = dlt645(meter)
    run(driver.sync_clock(ELECTRIC, NOW))
    assert meter.time_syncs == [NOW] and line.stats.timeouts == 0


def test_dlt645_has_no_valve_and_no_recharge() -> None:
    driver, _ = dlt645(Dlt645Meter())
    with pytest.raises(UnsupportedCommandError):
        run(driver.valve(ELECTRIC, ValveAction.CLOSE))
    with pytest.raises(UnsupportedCommandError):
        run(driver.recharge(ELECTRIC, D(10), 1))


# --- Modbus ---------------------------------------------------------------------------------

REFERENCE = load_map("reference_prepaid")
UNIT = MeterAddress(9, "modbus_tcp", "3", {})


def modbus_registers(**values: Decimal | int) -> dict[int, int]:
    """Every readable register of the reference map (zero unless given) as one unit's memory."""
    memory: dict[int, int] = {}
    for register in REFERENCE.registers:
        if register.readable:
            words = register.encode(values.get(register.name, 0))
            memory.update({register.address + i: word for i, word in enumerate(words)})
    return memory


def prepaid_meter(**values: Decimal | int) -> FakeModbusPort:
    return FakeModbusPort({3: modbus_registers(**values)})


def test_modbus_read_decodes_the_reference_map_without_ct_pt() -> None:
    port = prepaid_meter(
        energy_kwh=D("1234.56"),
        voltage_v=D("220.1"),
        current_a=D("1.23"),
        power_kw=D("-0.271"),
        power_factor=D("0.998"),
        frequency_hz=D("50.00"),
        remaining_money_cny=D("-3.21"),
        purchase_count=4,
        relay_state=1,
        status_bits=0b1000,
    )
    snapshot = run(ModbusDriver(port, retry=FAST, clock=clock).read(UNIT))
    # the map's gaps (0AH, 0EH, 13H–1FH) and the write-only 0024H are never read
    assert port.requests == [
        ("read", 3, 0x00, 2),
        ("read", 3, 0x0B, 3),
        ("read", 3, 0x10, 2),
        ("read", 3, 0x20, 4),
        ("read", 3, 0x25, 1),
    ]
    assert snapshot.total == D("1234.56") and snapshot.bands is None
    assert (snapshot.voltage_v, snapshot.current_a, snapshot.power_kw) == (
        D("220.1"),
        D("1.23"),
        D("-0.271"),
    )
    assert snapshot.remaining_money == D("-3.21") and snapshot.purchase_count == 4
    assert snapshot.relay == "open" and snapshot.protected is True
    assert snapshot.measured_at == NOW


def test_modbus_band_registers_when_the_meter_keeps_them() -> None:
    port = prepaid_meter(energy_kwh=D(10), energy_sharp_kwh=D(1), energy_valley_kwh=D(9))
    meter = MeterAddress(9, "modbus_tcp", "3", {"has_band_registers": "true"})
    snapshot = run(ModbusDriver(port, retry=FAST, clock=clock).read(meter))
    assert snapshot.bands == {"sharp": D(1), "peak": D(0), "flat": D(0), "valley": D(9)}


def test_modbus_block_decoding_matches_the_codec() -> None:
    rng = random.Random(3)
    for bands in (False, True):
        for planned in read_plan("reference_prepaid", bands):
            for _ in range(50):
                words = [rng.randrange(65536) for _ in range(planned.count)]
                assert planned.decode(words) == REFERENCE.decode(planned.start, words, D(1), D(1))


def relay_follows_commands(port: FakeModbusPort, *, protected: bool = False) -> None:
    def on_write(unit: int, address: int, values: list[int]) -> None:
        if address == 0x24 and not protected:
            port.registers[unit][0x23] = 1 if values[0] == 0x1A else 0

    port.on_write = on_write


def test_modbus_relay_writes_the_code_and_reads_back_the_state() -> None:
    port = prepaid_meter()
    relay_follows_commands(port)
    driver = ModbusDriver(port, retry=FAST, clock=clock)
    run(driver.relay(UNIT, RelayAction.TRIP, NOW + timedelta(minutes=1)))
    assert port.requests[:2] == [("write", 3, 0x24, 1), ("read", 3, 0x23, 1)]
    assert port.registers[3][0x23] == 1


def test_modbus_relay_that_does_not_move_is_refused() -> None:
    port = prepaid_meter()
    relay_follows_commands(port, protected=True)
    driver = ModbusDriver(port, retry=FAST, clock=clock)
    with pytest.raises(DeviceRefusedError, match="reads back closed"):
        run(driver.relay(UNIT, RelayAction.TRIP, NOW + timedelta(minutes=1)))
    with pytest.raises(DeviceRefusedError, match="deadline"):
        run(driver.relay(UNIT, RelayAction.TRIP, NOW))
    with pytest.raises(UnsupportedCommandError):
        run(driver.relay(UNIT, RelayAction.ALARM_ON, NOW + timedelta(minutes=1)))


def recharging_meter(stored: int) -> FakeModbusPort:
    port = prepaid_meter(purchase_count=stored)

    def on_write(unit: int, address: int, values: list[int]) -> None:
        if values[2] != port.registers[unit][0x22] + 1:
            raise ModbusRefusedError(3, "recharge")
        port.registers[unit][0x22] = values[2]

    port.on_write = on_write
    return port


def test_modbus_recharge_writes_amount_and_count_at_once() -> None:
    port = recharging_meter(stored=4)
    run(ModbusDriver(port, retry=FAST, clock=clock).recharge(UNIT, D("50.00"), 5))
    assert port.requests == [("write", 3, 0x40, 3)] and port.registers[3][0x22] == 5


def test_modbus_recharge_whose_answer_was_lost_is_not_done_twice() -> None:
    port = recharging_meter(stored=5)  # the first attempt arrived; its answer did not
    run(ModbusDriver(port, retry=FAST, clock=clock).recharge(UNIT, D("50.00"), 5))
    assert port.registers[3][0x22] == 5
    with pytest.raises(DeviceRefusedError, match="stored purchase count 5"):
        run(ModbusDriver(port, retry=FAST, clock=clock).recharge(UNIT, D("50.00"), 7))


def test_modbus_timeouts_are_retried_and_refusals_are_not() -> None:
    port = prepaid_meter(energy_kwh=D(1))
    port.fail_next = [DeviceTimeoutError("t"), DeviceConnectionError("c")]
    assert run(ModbusDriver(port, retry=FAST, clock=clock).read(UNIT)).total == D(1)
    port.fail_next = [ModbusRefusedError(4, "read")]
    with pytest.raises(ModbusRefusedError):
        run(ModbusDriver(port, retry=FAST, clock=clock).read(UNIT))


def test_modbus_limits_prices_clock_and_bad_unit() -> None:
    port = prepaid_meter()
    driver = ModbusDriver(port, retry=FAST, clock=clock)
    run(driver.write_limits(UNIT, {"alarm_1": D("20.00")}))
    run(driver.write_prices(UNIT, {"flat": D("0.6800")}))
    run(driver.sync_clock(UNIT, NOW))
    memory = port.registers[3]
    assert REFERENCE.register("alarm_1_cny").decode([memory[0x26], memory[0x27]], D(1), D(1)) == D(
        20
    )
    assert [memory[0x50 + i] for i in range(6)] == [26, 11, 2, 8, 0, 0]  # Shanghai wall clock
    with pytest.raises(DeviceError, match="unit id"):
        run(driver.read(MeterAddress(9, "modbus_tcp", "300", {})))
    with pytest.raises(UnsupportedCommandError):
        run(driver.valve(UNIT, ValveAction.OPEN))


def test_pymodbus_port_reads_refusals_and_connection_errors_over_loopback() -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    async def scenario() -> list[int]:
        device = SimDevice(
            id=3, simdata=[SimData(0, count=4, values=7, datatype=DataType.REGISTERS)]
        )
        server = ModbusTcpServer(device, address=("127.0.0.1", 0))
        await server.serve_forever(background=True)
        port_number = cast(asyncio.Server, server.transport).sockets[0].getsockname()[1]
        port = PymodbusPort.tcp("127.0.0.1", port_number, timeout_s=1.0)
        try:
            words = await port.read_registers(3, 0, 4, timeout_s=1.0)
            with pytest.raises(ModbusRefusedError, match="02"):
                await port.read_registers(3, 100, 2, timeout_s=1.0)
            assert port.stats.max_in_flight == 1
            return words
        finally:
            await port.close()
            await server.shutdown()  # type: ignore[no-untyped-call]

    assert run(scenario()) == [7, 7, 7, 7]
    closed = PymodbusPort.tcp("127.0.0.1", 1, timeout_s=0.2)
    with pytest.raises(DeviceConnectionError):
        run(closed.read_registers(1, 0, 1, timeout_s=0.2))


# --- CJ/T 188 -------------------------------------------------------------------------------

WATER = MeterAddress(11, "cjt188", "00000000000001", {})


def water_line(status: w.MeterStatus, *, order: w.DiOrder = w.DiOrder.HIGH_FIRST) -> FakeTransport:
    reading = w.MeterReading(D("12.34"), D("10.00"), NOW, status)

    def respond(raw: bytes) -> bytes:
        (frame,) = w.Cjt188Decoder().feed(raw)
        if frame.function == w.Function.READ:
            answer = w.read_meter_reply(frame.address, reading, zone=SHANGHAI, di_order=order)
        elif w.parse_valve_control_request(frame, di_order=order) == w.ValveCommand.CLOSE:
            answer = w.error_reply(frame.address, w.Function.WRITE, status)
        else:
            answer = w.valve_control_reply(frame.address, status, di_order=order)
        return w.encode_frame(answer)

    return FakeTransport(respond)


def test_cjt188_read_gives_volume_valve_and_battery() -> None:
    line = water_line(w.MeterStatus(w.ValveState.CLOSED, battery_low=True))
    snapshot = run(Cjt188Driver(line, retry=FAST, clock=clock).read(WATER))
    assert snapshot.total == D("12.34") and snapshot.measured_at == NOW
    assert snapshot.valve == "closed" and snapshot.battery_low is True


def test_cjt188_di_order_is_a_meter_option() -> None:
    line = water_line(w.MeterStatus(), order=w.DiOrder.LOW_FIRST)
    meter = MeterAddress(11, "cjt188", WATER.address, {"di_order": "low_first"})
    assert run(Cjt188Driver(line, retry=FAST, clock=clock).read(meter)).valve == "open"


def test_cjt188_valve_commands_and_refusals() -> None:
    line = water_line(w.MeterStatus(w.ValveState.ABNORMAL))
    driver = Cjt188Driver(line, retry=FAST, clock=clock)

    async def scenario() -> None:
        await driver.valve(WATER, ValveAction.OPEN)
        with pytest.raises(DeviceRefusedError, match="refused valve close"):
            await driver.valve(WATER, ValveAction.CLOSE)
        with pytest.raises(UnsupportedCommandError):
            await driver.relay(WATER, RelayAction.TRIP, NOW)

    run(scenario())


# --- registry -------------------------------------------------------------------------------


def test_registry_maps_protocol_and_transport_to_drivers() -> None:
    assert isinstance(
        open_bus(BusConfig(1, "dlt645", "tcp", "127.0.0.1:4001")).driver, Dlt645Driver
    )
    assert isinstance(open_bus(BusConfig(2, "cjt188", "serial", "/dev/ttyS1")).driver, Cjt188Driver)
    for protocol in ("modbus_tcp", "modbus_rtu"):
        connection = open_bus(BusConfig(3, protocol, "tcp", "127.0.0.1:502"))
        assert isinstance(connection.driver, ModbusDriver)
    assert isinstance(
        open_bus(BusConfig(4, "modbus_rtu", "serial", "/dev/ttyS2")).driver, ModbusDriver
    )
    with pytest.raises(DeviceError, match="not polled"):
        open_bus(BusConfig(5, "dlt645", "mqtt", "gw"))
    with pytest.raises(DeviceError, match="modbus_rtu"):
        open_bus(BusConfig(6, "modbus_tcp", "serial", "/dev/ttyS3"))
