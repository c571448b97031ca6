"""Modbus driver (reference prepaid map or any map file) and the pymodbus client behind it.

A read plans the fewest register reads covering energy (and the four tariff registers when the
meter keeps them), voltage, current, power, power factor, frequency, remaining money, purchase
count, relay state and status bits — two requests with the reference map — and decodes them
with CT = PT = 1, because the money core applies the meter's ratios.

Commands: relay code to 0024H, then the relay state at 0023H is read back (a trip must read
"open", a close "closed"); a recharge writes amount and purchase count at 0040H in one request,
a take-back (退电) amount and take-back count at 0044H (its counter at 0047H is read only by
the take-back command, not by every poll).
The meter refuses a purchase count that is not its stored count + 1, which makes a retried
recharge safe: when the retry is refused, the stored count is read back and, if it already
equals ours, the first attempt arrived and the recharge counts as done.

Meter options: ``map`` (register map file stem, default ``reference_prepaid``), ``zone`` (for
the clock registers), ``has_band_registers``. Modbus has no command deadline on the wire, so the
driver refuses to send a relay command whose deadline has passed.

pymodbus is imported only in this module (:class:`PymodbusPort`); its exceptions are converted
to :class:`~meterdesk.devices.ports.DeviceError` subclasses there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any

from meterdesk.devices.codecs.modbus_map import (
    TAKE_BACK_COUNT,
    ModbusMapError,
    RegisterMap,
    load_map,
)
from meterdesk.devices.drivers import (
    DEFAULT_SLEEP,
    RetryPolicy,
    Sleep,
    UnsupportedCommandError,
    band_index,
    check_names,
    default_clock,
    flag,
    meter_zone,
    with_retries,
)
from meterdesk.devices.ports import (
    DeviceError,
    DeviceRefusedError,
    DeviceTimeoutError,
    MeterAddress,
    RelayAction,
    Snapshot,
    ValveAction,
)
from meterdesk.devices.transports import (
    DeviceConnectionError,
    ModbusPort,
    ModbusRefusedError,
    TransportStats,
)

ONE = Decimal(1)
DEFAULT_MAP = "reference_prepaid"
BAND_REGISTERS = {f"energy_{band}_kwh": band for band in ("sharp", "peak", "flat", "valley")}
LIVE_REGISTERS = ("voltage_v", "current_a", "power_kw", "power_factor", "frequency_hz")
STATE_REGISTERS = ("remaining_money_cny", "purchase_count", "relay_state", "status_bits")
RELAY_STATE, RELAY_COMMAND, PURCHASE_COUNT = "relay_state", "relay_command", "purchase_count"
PROTECT_BIT = 1 << 3
RELAY_CODES = {
    RelayAction.TRIP: 0x1A,
    RelayAction.CLOSE_ALLOWED: 0x1B,
    RelayAction.CLOSE: 0x1C,
    RelayAction.PROTECT_ON: 0x3A,
    RelayAction.PROTECT_OFF: 0x3B,
}
EXPECTED_RELAY = {RelayAction.TRIP: 1, RelayAction.CLOSE: 0}  # 0023H: 0 closed, 1 open
LIMIT_REGISTERS = {
    "alarm_1": "alarm_1_cny",
    "alarm_2": "alarm_2_cny",
    "overdraft_limit": "overdraft_limit_cny",
}
CLOCK_REGISTER = "clock_year"
READ_BACK_ATTEMPTS = 3


@cache
def register_map(name: str) -> RegisterMap:
    return load_map(name)


@dataclass(frozen=True)
class Block:
    """One planned read and where each value sits in it: (name, offset, end, signed, scale).

    Decoding here instead of with ``RegisterMap.decode`` keeps the poll's hot path short (no
    scan of the whole map per block); the result is the same because CT = PT = 1 here, which
    ``test_modbus_block_decoding_matches_the_codec`` checks register by register."""

    start: int
    count: int
    fields: tuple[tuple[str, int, int, bool, Decimal | None], ...]

    def decode(self, words: Sequence[int]) -> dict[str, Decimal | int]:
        values: dict[str, Decimal | int] = {}
        for name, offset, end, signed, scale in self.fields:
            raw = 0
            for word in words[offset:end]:
                raw = raw << 16 | word
            if signed and raw >= 1 << (16 * (end - offset) - 1):
                raw -= 1 << (16 * (end - offset))
            values[name] = raw if scale is None else Decimal(raw) * scale
        return values


def block(registers: RegisterMap, start: int, count: int) -> Block:
    inside = [
        r for r in registers.registers if r.readable and start <= r.address < r.end <= start + count
    ]
    fields = tuple(
        (r.name, r.address - start, r.end - start, r.type.signed, r.scale) for r in inside
    )
    return Block(start, count, fields)


@cache
def read_plan(name: str, bands: bool) -> tuple[Block, ...]:
    registers = register_map(name)
    known = {register.name for register in registers.registers if register.readable}
    wanted = ["energy_kwh", *(BAND_REGISTERS if bands else ()), *LIVE_REGISTERS, *STATE_REGISTERS]
    plan = registers.plan_reads([n for n in wanted if n in known])
    return tuple(block(registers, start, count) for start, count in plan)


def unit_id(meter: MeterAddress) -> int:
    address = meter.address.strip()
    if not address.isdigit() or not 1 <= int(address) <= 247:
        raise DeviceError(f"meter {meter.meter_id}: Modbus unit id must be 1–247, got {address!r}")
    return int(address)


def _decimal(values: Mapping[str, Decimal | int], name: str) -> Decimal | None:
    value = values.get(name)
    return None if value is None else Decimal(value)


def snapshot_from(
    meter_id: int, measured_at: datetime, values: Mapping[str, Decimal | int]
) -> Snapshot:
    bands = {band: Decimal(values[name]) for name, band in BAND_REGISTERS.items() if name in values}
    relay, status = values.get(RELAY_STATE), values.get("status_bits")
    count = values.get(PURCHASE_COUNT)
    return Snapshot(
        meter_id=meter_id,
        measured_at=measured_at,
        total=_decimal(values, "energy_kwh"),
        bands=bands if len(bands) == len(BAND_REGISTERS) else None,
        voltage_v=_decimal(values, "voltage_v"),
        current_a=_decimal(values, "current_a"),
        power_kw=_decimal(values, "power_kw"),
        power_factor=_decimal(values, "power_factor"),
        frequency_hz=_decimal(values, "frequency_hz"),
        relay=None if relay is None else ("open" if int(relay) else "closed"),
        protected=None if status is None else bool(int(status) & PROTECT_BIT),
        remaining_money=_decimal(values, "remaining_money_cny"),
        purchase_count=None if count is None else int(count),
    )


class ModbusDriver:
    """One bus (TCP endpoint or RS485 line) of Modbus meters."""

    def __init__(
        self,
        port: ModbusPort,
        *,
        retry: RetryPolicy | None = None,
        clock: Callable[[], datetime] = default_clock,
        sleep: Sleep = DEFAULT_SLEEP,
    ) -> None:
        self.port = port
        self.retry = retry or RetryPolicy()
        self._clock = clock
        self._sleep = sleep

    def _map(self, meter: MeterAddress) -> RegisterMap:
        try:
            return register_map(meter.options.get("map", DEFAULT_MAP))
        except ModbusMapError as error:
            raise DeviceError(f"meter {meter.meter_id}: {error}") from None

    async def _retried(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        return await with_retries(self.retry, operation, sleep=self._sleep)

    async def _read_words(self, unit: int, start: int, count: int) -> list[int]:
        timeout_s = self.retry.timeout_s
        words: list[int] = await self._retried(
            lambda: self.port.read_registers(unit, start, count, timeout_s=timeout_s)
        )
        return words

    async def _write_words(self, unit: int, address: int, words: Sequence[int]) -> None:
        timeout_s = self.retry.timeout_s
        if len(words) == 1:
            await self._retried(
                lambda: self.port.write_register(unit, address, words[0], timeout_s=timeout_s)
            )
        else:
            await self._retried(
                lambda: self.port.write_registers(unit, address, words, timeout_s=timeout_s)
            )

    async def _read_values(
        self, meter: MeterAddress, blocks: Sequence[Block]
    ) -> dict[str, Decimal | int]:
        unit = unit_id(meter)
        values: dict[str, Decimal | int] = {}
        for planned in blocks:
            values.update(
                planned.decode(await self._read_words(unit, planned.start, planned.count))
            )
        return values

    async def read(self, meter: MeterAddress) -> Snapshot:
        self._map(meter)  # an unknown map is the meter's configuration error
        plan = read_plan(meter.options.get("map", DEFAULT_MAP), flag(meter, "has_band_registers"))
        first, *rest = plan
        values = await self._read_values(meter, [first])
        measured_at = self._clock()  # when the energy registers came back
        values.update(await self._read_values(meter, rest))
        return snapshot_from(meter.meter_id, measured_at, values)

    async def _read_one(self, meter: MeterAddress, name: str) -> int:
        register = self._map(meter).register(name)
        planned = block(self._map(meter), register.address, register.type.count)
        return int((await self._read_values(meter, [planned]))[name])

    async def _write(self, meter: MeterAddress, name: str, value: Decimal | int) -> None:
        try:
            address, words = self._map(meter).encode_write(name, value)
        except ModbusMapError as error:
            raise UnsupportedCommandError(f"meter {meter.address}: {error}") from None
        await self._write_words(unit_id(meter), address, words)

    async def relay(self, meter: MeterAddress, action: RelayAction, deadline: datetime) -> None:
        if action not in RELAY_CODES:
            raise UnsupportedCommandError(
                f"the Modbus relay register has no code for {action.value}"
            )
        if self._clock() >= deadline:
            raise DeviceRefusedError(
                f"relay {action.value}: deadline {deadline.isoformat()} has passed"
            )
        await self._write(meter, RELAY_COMMAND, RELAY_CODES[action])
        expected = EXPECTED_RELAY.get(action)
        if expected is not None:
            await self._confirm_relay(meter, action, expected)

    async def _confirm_relay(self, meter: MeterAddress, action: RelayAction, expected: int) -> None:
        state = -1
        for attempt in range(READ_BACK_ATTEMPTS):
            state = await self._read_one(meter, RELAY_STATE)
            if state == expected:
                return
            await self._sleep(self.retry.backoff_s * 2**attempt)
        shown = {0: "closed", 1: "open"}.get(state, str(state))
        raise DeviceRefusedError(
            f"meter {meter.address}: relay reads back {shown} after {action.value}"
        )

    async def recharge(self, meter: MeterAddress, amount: Decimal, purchase_count: int) -> None:
        try:
            address, words = self._map(meter).encode_recharge(amount, purchase_count)
        except ModbusMapError as error:
            raise UnsupportedCommandError(f"meter {meter.address}: {error}") from None
        try:
            await self._write_words(unit_id(meter), address, words)
        except ModbusRefusedError as error:
            stored = await self._read_one(meter, PURCHASE_COUNT)
            if stored == purchase_count:
                return  # an earlier attempt whose answer was lost already did it
            raise DeviceRefusedError(
                f"meter {meter.address} refused recharge #{purchase_count} "
                f"(stored purchase count {stored}): {error}"
            ) from None

    async def take_back(self, meter: MeterAddress, amount: Decimal, take_back_count: int) -> None:
        """退电: amount and take-back count at 0044H in one request. As with a recharge, a
        refused write whose count is already the meter's was an earlier attempt that arrived."""
        try:
            address, words = self._map(meter).encode_take_back(amount, take_back_count)
        except ModbusMapError as error:
            raise UnsupportedCommandError(
                f"meter {meter.address}: its register map cannot take money back ({error})"
            ) from None
        try:
            await self._write_words(unit_id(meter), address, words)
        except ModbusRefusedError as error:
            stored = await self.take_back_count(meter)
            if stored == take_back_count:
                return
            raise DeviceRefusedError(
                f"meter {meter.address} refused take-back #{take_back_count} of {amount} "
                f"(stored take-back count {stored}; more than its remaining money, or a "
                f"replay): {error}"
            ) from None

    async def take_back_count(self, meter: MeterAddress) -> int:
        try:
            self._map(meter).register(TAKE_BACK_COUNT)
        except ModbusMapError as error:
            raise UnsupportedCommandError(
                f"meter {meter.address}: its register map has no take-back counter ({error})"
            ) from None
        return await self._read_one(meter, TAKE_BACK_COUNT)

    async def write_prices(self, meter: MeterAddress, prices: Mapping[str, Decimal]) -> None:
        names = {name: f"price_tariff_{band_index(name)}_per_kwh" for name in prices}
        for name, register in names.items():
            await self._write(meter, register, prices[name])

    async def write_limits(self, meter: MeterAddress, limits: Mapping[str, Decimal]) -> None:
        check_names(limits, LIMIT_REGISTERS, "limit")
        for name, value in limits.items():
            await self._write(meter, LIMIT_REGISTERS[name], value)

    async def sync_clock(self, meter: MeterAddress, now: datetime) -> None:
        """The clock registers (YY MM DD hh mm ss at 0050H) in the meter's zone."""
        local = now.astimezone(meter_zone(meter))
        words = [local.year % 100, local.month, local.day, local.hour, local.minute, local.second]
        try:
            address = self._map(meter).register(CLOCK_REGISTER).address
        except ModbusMapError as error:
            raise UnsupportedCommandError(f"meter {meter.address}: {error}") from None
        await self._write_words(unit_id(meter), address, words)

    async def valve(self, meter: MeterAddress, action: ValveAction) -> None:
        raise UnsupportedCommandError("Modbus electricity meters have no valve")


class PymodbusPort:
    """pymodbus' async client behind :class:`ModbusPort`: SOCKET framing for Modbus TCP, RTU
    framing over TCP for transparent DTUs, or RTU over a serial line.

    pymodbus' own retries and automatic reconnects are switched off: the driver retries, and
    this class reconnects on the next request after a connection error.
    """

    def __init__(self, name: str, make_client: Callable[[Callable[..., Any]], Any]) -> None:
        self.name = name
        self.stats = TransportStats()
        self._make_client = make_client
        self._client: Any = None
        self._lock = asyncio.Lock()

    @classmethod
    def tcp(
        cls, host: str, port: int, *, rtu: bool = False, timeout_s: float = 1.0
    ) -> PymodbusPort:
        def make(trace: Callable[..., Any]) -> Any:
            from pymodbus.client import AsyncModbusTcpClient
            from pymodbus.framer import FramerType

            framer = FramerType.RTU if rtu else FramerType.SOCKET
            return AsyncModbusTcpClient(
                host, port=port, framer=framer, timeout=timeout_s, retries=0,
                reconnect_delay=0, trace_pdu=trace,
            )  # fmt: skip

        return cls(f"modbus{'-rtu' if rtu else ''}://{host}:{port}", make)

    @classmethod
    def serial(
        cls, device: str, baud: int, parity: str = "N", *, timeout_s: float = 1.0
    ) -> PymodbusPort:
        def make(trace: Callable[..., Any]) -> Any:
            from pymodbus.client import AsyncModbusSerialClient

            return AsyncModbusSerialClient(
                device, baudrate=baud, parity=parity, bytesize=8, stopbits=1,
                timeout=timeout_s, retries=0, reconnect_delay=0, trace_pdu=trace,
            )  # fmt: skip

        return cls(f"modbus-serial:{device}@{baud}{parity}", make)

    def _trace(self, sending: bool, pdu: Any) -> Any:
        """pymodbus' PDU trace: counts requests on the wire without their answer yet."""
        if sending:
            self.stats.sent()
        else:
            self.stats.answered()
        return pdu

    async def read_registers(
        self, unit: int, address: int, count: int, *, timeout_s: float
    ) -> list[int]:
        what = f"read {count} registers at {address:04X}H of unit {unit}"
        response = await self._call(
            lambda c: c.read_holding_registers(address, count=count, device_id=unit),
            what,
            timeout_s,
        )
        registers = list(getattr(response, "registers", None) or [])
        if len(registers) != count:
            raise DeviceError(f"{self.name}: {what}: got {len(registers)} registers")
        return registers

    async def write_register(
        self, unit: int, address: int, value: int, *, timeout_s: float
    ) -> None:
        what = f"write {value:04X}H at {address:04X}H of unit {unit}"
        await self._call(
            lambda c: c.write_register(address, value, device_id=unit), what, timeout_s
        )

    async def write_registers(
        self, unit: int, address: int, values: Sequence[int], *, timeout_s: float
    ) -> None:
        what = f"write {len(values)} registers at {address:04X}H of unit {unit}"
        await self._call(
            lambda c: c.write_registers(address, list(values), device_id=unit), what, timeout_s
        )

    async def close(self) -> None:
        async with self._lock:
            self._drop()

    async def _call(
        self, operation: Callable[[Any], Awaitable[Any]], what: str, timeout_s: float
    ) -> Any:
        from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

        async with self._lock:
            client = await self._connected(timeout_s)
            try:
                async with asyncio.timeout(timeout_s):
                    response = await operation(client)
            except (TimeoutError, ModbusIOException):
                self.stats.timeouts += 1
                self.stats.in_flight = 0  # the request was abandoned
                raise DeviceTimeoutError(
                    f"{self.name}: {what}: no answer within {timeout_s:g} s"
                ) from None
            except (ConnectionException, OSError) as error:
                self._fail()
                raise DeviceConnectionError(f"{self.name}: {what}: {error}") from None
            except ModbusException as error:
                self._fail()
                raise DeviceError(f"{self.name}: {what}: {error}") from None
        if response.isError():
            raise ModbusRefusedError(int(getattr(response, "exception_code", 0)), what)
        return response

    async def _connected(self, timeout_s: float) -> Any:
        if self._client is not None and self._client.connected:
            return self._client
        self._drop()
        try:
            client = self._make_client(self._trace)
            async with asyncio.timeout(max(timeout_s, 1.0) + 1.0):
                connected = await client.connect()
        except (TimeoutError, OSError, ValueError) as error:
            self.stats.errors += 1
            raise DeviceConnectionError(
                f"{self.name}: cannot connect: {error or 'timeout'}"
            ) from None
        if not connected:
            self.stats.errors += 1
            client.close()
            raise DeviceConnectionError(f"{self.name}: cannot connect")
        self.stats.connects += 1
        self._client = client
        return client

    def _fail(self) -> None:
        self.stats.errors += 1
        self._drop()

    def _drop(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self._client = None
