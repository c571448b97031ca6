"""Prepaid meters on Modbus TCP (or RTU framing over TCP), reference prepaid map (§2).

Built on pymodbus 3.16.1's server simulator: one ``SimDevice`` per meter (unit id = meter
address), one ``SimData`` per register of ``maps/reference_prepaid.json`` (so the gaps of the
map answer exception 02), and the device's ``action`` callback — the one hook 3.16 really calls
(overriding datablock methods is silently ignored) — refreshes every register from the meter
model before each access and applies writes to the model:

- 0024H relay command (1A trip, 1B close allowed, 1C close, 2A/2B alarm, 3A/3B protect);
- 0026H–002BH alarm 1, alarm 2, overdraft limit; 0030H–0037H prices of tariffs 1–4;
- 0040H recharge: amount (UINT32, 0.01 CNY) and purchase count in *one* write of three
  registers; accepted only when count = stored + 1, else exception 03 (nothing changes);
- 0044H take-back (退电): amount (UINT32, 0.01 CNY) and take-back count in one write of three
  registers; accepted only when count = stored take-back count (0047H) + 1 and the amount is
  at most the remaining money, else exception 03 (nothing changes);
- 0050H–0055H clock (YY MM DD hh mm ss, the meter's wall clock).

Refusals by the meter's rules (bad relay code, alarm 1 < alarm 2, hoarding limit, protected
meter asked to trip, partial write of a 32-bit value or of the recharge) answer exception 03;
writes to read-only registers answer 02 (pymodbus refuses them before the callback).
Write-only registers read as 0.

A unit id no meter has, and an offline meter, get *silence* (the request is dropped in
``trace_pdu``), as on the RS485 line behind a transparent DTU — pymodbus's own
``ignore_missing_devices`` answers 04 instead. Slow replies sleep in the callback; garbage
bytes are put before replies only with RTU framing (TCP framing has no room for line noise).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import cast

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from meterdesk.devices.codecs.modbus_map import (
    RECHARGE_AMOUNT,
    RECHARGE_COUNT,
    TAKE_BACK_AMOUNT,
    TAKE_BACK_REQUEST_COUNT,
    Register,
    RegisterMap,
    load_map,
)
from meterdesk.shared.errors import ValidationError
from meterdesk.shared.time import Clock
from meterdesk.simulator.meter import ElectricityMeter
from meterdesk.simulator.modbus_values import apply_writes, register_values
from meterdesk.simulator.prepaid import CommandRefused

MAX_UNIT_ID = 247
REFERENCE_MAP = "reference_prepaid"


class ModbusMeter:
    """One meter as a Modbus device: its registers follow the model on every access."""

    def __init__(self, meter: ElectricityMeter, register_map: RegisterMap, clock: Clock) -> None:
        if not 1 <= meter.address <= MAX_UNIT_ID:
            raise ValidationError(f"Modbus unit id {meter.address} outside 1–{MAX_UNIT_ID}")
        self.meter, self.map, self.clock = meter, register_map, clock

    def device(self) -> SimDevice:
        blocks = [
            SimData(
                register.address,
                count=register.type.count,
                values=0,
                datatype=DataType.REGISTERS,
                readonly=not register.writable,
            )
            for register in self.map.registers
        ]
        return SimDevice(self.meter.address, simdata=blocks, action=self.action)

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if self.meter.faults.reply_delay_s > 0:
            await asyncio.sleep(self.meter.faults.reply_delay_s)
        now = self.clock()
        self.meter.advance(now)
        if set_values:
            refused = self._write(address, cast(list[int], set_values), now)
            if refused is not None:
                return refused
        self._refresh(start_address, registers, now)
        if set_values:  # what pymodbus stores after the callback: the refreshed words
            offset = address - start_address
            cast(list[int], set_values)[:] = registers[offset : offset + count]
        return None

    def _refresh(self, start_address: int, registers: list[int], now: datetime) -> None:
        values = register_values(self.meter, now)
        for register in self.map.registers:
            words = register.encode(_fit(register, values.get(register.name, 0)))
            registers[register.address - start_address : register.end - start_address] = words

    def _write(self, address: int, words: list[int], now: datetime) -> ExcCodes | None:
        end = address + len(words)
        touched = [r for r in self.map.registers if r.address < end and r.end > address]
        if any(r.address < address or r.end > end or not r.writable for r in touched):
            return ExcCodes.ILLEGAL_VALUE  # half of a 32-bit value, or a read-only register
        written = {
            r.name: r.decode(words[r.address - address : r.end - address], Decimal(1), Decimal(1))
            for r in touched
        }
        if (RECHARGE_AMOUNT in written) != (RECHARGE_COUNT in written):
            return ExcCodes.ILLEGAL_VALUE
        if (TAKE_BACK_AMOUNT in written) != (TAKE_BACK_REQUEST_COUNT in written):
            return ExcCodes.ILLEGAL_VALUE
        try:
            apply_writes(self.meter, written, now)
        except (CommandRefused, ValueError):
            return ExcCodes.ILLEGAL_VALUE
        return None


def _fit(register: Register, value: Decimal | int) -> Decimal | int:
    """``value`` rounded to the register's scale and clamped to its type's range."""
    low, high = register.type.bounds
    if register.scale is None:
        return min(max(int(value), low), high)
    scaled = (Decimal(value) / register.scale).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return min(max(scaled, Decimal(low)), Decimal(high)) * register.scale


class ModbusMeterServer:
    """``meters`` behind one Modbus TCP socket (``rtu=True``: RTU frames over TCP)."""

    def __init__(
        self,
        meters: Sequence[ElectricityMeter],
        *,
        host: str,
        port: int,
        clock: Clock,
        rtu: bool = False,
        register_map: RegisterMap | None = None,
        seed: int = 0,
        name: str = "modbus",
    ) -> None:
        chosen_map = register_map or load_map(REFERENCE_MAP)
        self.devices = {meter.address: ModbusMeter(meter, chosen_map, clock) for meter in meters}
        self.host, self.port, self.rtu, self.name = host, port, rtu, name
        self._noise = random.Random(f"{seed}:{name}:garbage")  # noqa: S311 - line noise
        self._server: ModbusTcpServer | None = None

    async def start(self) -> None:
        server = ModbusTcpServer(
            [device.device() for device in self.devices.values()],
            framer=FramerType.RTU if self.rtu else FramerType.SOCKET,
            address=(self.host, self.port),
            trace_pdu=self._trace_pdu,
            trace_packet=self._trace_packet,
        )
        await server.serve_forever(background=True)
        self._server = server
        listener = cast(asyncio.Server, server.transport)
        self.port = listener.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending:
            return pdu
        device = self.devices.get(pdu.dev_id)
        if device is None or device.meter.faults.offline:
            return cast(ModbusPDU, None)  # dropped: the handler only answers a pdu it keeps
        return pdu

    def _trace_packet(self, sending: bool, packet: bytes) -> bytes:
        if not (sending and self.rtu and packet):
            return packet
        device = self.devices.get(packet[0])
        noise = device.meter.faults.garbage_bytes if device is not None else 0
        return bytes(self._noise.randrange(256) for _ in range(noise)) + packet
