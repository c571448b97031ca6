"""CJ/T 188-2004 codec for water meters: frame, streaming decoder, 901F read and A017 valve.

Wire form: ``[FE FE] 68 T A0..A6 C L DI SER DATA CS 16`` — no 0x33 scrambling, a 14-digit BCD
address lowest pair first, ``L`` counting DI, SER and DATA, CS the byte sum from ``68`` through
the last data byte. See ``docs/PROTOCOLS.md`` §3.

Invariants:
- :class:`Cjt188Frame` holds the whole data field (DI, SER, payload) exactly as received, so a
  frame decodes the same whatever DI byte order a model uses; the order is applied only when
  the DI is read or written (:class:`DiOrder`, a per-model setting, ``HIGH_FIRST`` by default,
  and the SER byte always follows the DI).
- :class:`Cjt188Decoder` never raises: garbage, bad checksums and truncated frames are skipped
  byte by byte, and a complete frame after an incomplete candidate is not held back
  (see :mod:`meterdesk.devices.codecs.stream`).
- Volumes are exact ``Decimal`` m³ (0.01 m³ resolution on the wire); the meter clock is read as
  the wall clock of the zone the caller passes, never a naive datetime.
- Error replies (C1, C4) carry ``SER + ST ST``; they raise :class:`Cjt188RefusedError` in the
  parsers instead of being read as data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal
from enum import Enum, IntEnum

from meterdesk.devices.codecs import bcd
from meterdesk.devices.codecs.stream import FrameScanner, Verdict
from meterdesk.shared.errors import ValidationError

START = 0x68
END = 0x16
PREAMBLE_BYTE = 0xFE
ADDRESS_BYTES = 7
HEADER_BYTES = 11  # 68 T A0..A6 C L
WILDCARD_ADDRESS = "AA" * ADDRESS_BYTES
DI_READ_METER = 0x901F
DI_VALVE_CONTROL = 0xA017
UNIT_CUBIC_METRE = 0x2C
UNIT_LITRE = 0x29
REPLY_BIT = 0x80
ERROR_BIT = 0x40
READING_BYTES = 2 + 1 + 5 + 5 + 7 + 2  # DI SER flow+unit settlement+unit clock status


class Cjt188Error(ValidationError):
    """Root of every CJ/T 188 codec error."""


class Cjt188FrameError(Cjt188Error):
    """Bytes that are not one well-formed frame."""


class Cjt188DataError(Cjt188Error):
    """A data field that does not fit its DI or command."""


class MeterType(IntEnum):
    COLD_WATER = 0x10
    HOT_WATER = 0x11
    DRINKING_WATER = 0x12
    RECLAIMED_WATER = 0x13


class Function(IntEnum):
    READ = 0x01
    READ_ADDRESS = 0x03
    WRITE = 0x04
    WRITE_ADDRESS = 0x15


class DiOrder(Enum):
    """How a model puts the two DI bytes on the wire."""

    HIGH_FIRST = "high_first"  # 901F → 90 1F
    LOW_FIRST = "low_first"  # 901F → 1F 90


class ValveState(IntEnum):
    """Bits 1–0 of the first status byte."""

    OPEN = 0b00
    CLOSED = 0b01
    UNDEFINED = 0b10  # not defined by the standard; treat like ABNORMAL
    ABNORMAL = 0b11


class ValveCommand(IntEnum):
    OPEN = 0x55
    CLOSE = 0x99


def di_to_wire(di: int, order: DiOrder) -> bytes:
    if not 0 <= di <= 0xFFFF:
        raise Cjt188DataError(f"data identifier {di:#x} does not fit two bytes")
    return di.to_bytes(2, "big" if order is DiOrder.HIGH_FIRST else "little")


def di_from_wire(raw: bytes, order: DiOrder) -> int:
    if len(raw) < 2:
        raise Cjt188DataError("the data field is too short for a data identifier")
    return int.from_bytes(raw[:2], "big" if order is DiOrder.HIGH_FIRST else "little")


@dataclass(frozen=True, slots=True)
class Cjt188Frame:
    """Meter type byte, address as written (14 digits), control byte, whole data field."""

    meter_type: int
    address: str
    control: int
    data: bytes = b""

    def __post_init__(self) -> None:
        try:
            bcd.address_to_wire(self.address, ADDRESS_BYTES)
        except bcd.BcdError as error:
            raise Cjt188FrameError(str(error)) from None
        if not (0 <= self.meter_type <= 0xFF and 0 <= self.control <= 0xFF):
            raise Cjt188FrameError("meter type and control must be single bytes")
        if len(self.data) > 0xFF:
            raise Cjt188FrameError(f"{len(self.data)} data bytes exceed 255")

    @property
    def function(self) -> int:
        return self.control & 0x3F

    @property
    def is_reply(self) -> bool:
        return bool(self.control & REPLY_BIT)

    @property
    def is_error(self) -> bool:
        return self.is_reply and bool(self.control & ERROR_BIT)


def encode_frame(frame: Cjt188Frame, *, preamble: int = 2) -> bytes:
    if preamble < 0:
        raise Cjt188FrameError("preamble count cannot be negative")
    address = bcd.address_to_wire(frame.address, ADDRESS_BYTES)
    body = bytes([START, frame.meter_type]) + address + bytes([frame.control, len(frame.data)])
    body += frame.data
    return bytes([PREAMBLE_BYTE]) * preamble + body + bytes([sum(body) & 0xFF, END])


def _try_parse(buffer: bytes | bytearray, at: int) -> tuple[Verdict, Cjt188Frame | None, int]:
    """Judge the candidate frame starting with the ``68`` at ``at``; return its end if complete."""
    if len(buffer) - at < HEADER_BYTES:
        return Verdict.INCOMPLETE, None, 0
    end = at + HEADER_BYTES + buffer[at + 10] + 2
    if len(buffer) < end:
        return Verdict.INCOMPLETE, None, 0
    if sum(buffer[at : end - 2]) & 0xFF != buffer[end - 2] or buffer[end - 1] != END:
        return Verdict.INVALID, None, 0
    try:
        address = bcd.address_from_wire(bytes(buffer[at + 2 : at + 9]))
    except bcd.BcdError:
        return Verdict.INVALID, None, 0
    data = bytes(buffer[at + HEADER_BYTES : end - 2])
    return Verdict.COMPLETE, Cjt188Frame(buffer[at + 1], address, buffer[at + 9], data), end


def decode_frame(raw: bytes) -> Cjt188Frame:
    """Exactly one frame, optionally after FE bytes."""
    start = len(raw) - len(raw.lstrip(bytes([PREAMBLE_BYTE])))
    if start >= len(raw) or raw[start] != START:
        raise Cjt188FrameError("no frame start (68) after the preamble")
    verdict, frame, end = _try_parse(raw, start)
    if verdict is Verdict.INCOMPLETE:
        raise Cjt188FrameError(f"truncated frame ({len(raw) - start} bytes)")
    if frame is None:
        raise Cjt188FrameError("bad frame: checksum, end byte or address")
    if end != len(raw):
        raise Cjt188FrameError(f"{len(raw) - end} unexpected bytes after the frame")
    return frame


class Cjt188Decoder(FrameScanner[Cjt188Frame]):
    """Turns a byte stream into frames; resynchronisation as in :mod:`.stream` (FE skipped)."""

    def __init__(self) -> None:
        super().__init__(bytes([START]), _try_parse, PREAMBLE_BYTE)


@dataclass(frozen=True, slots=True)
class MeterStatus:
    """The two status bytes: valve state, battery low, and any other bits kept as they came."""

    valve: ValveState = ValveState.OPEN
    battery_low: bool = False
    other_bits: int = 0  # the 16-bit word without bits 0–2

    def to_wire(self) -> bytes:
        if self.other_bits & 0x07 or not 0 <= self.other_bits <= 0xFFFF:
            raise Cjt188DataError("other status bits must leave bits 0–2 free and fit 16 bits")
        if self.valve not in tuple(ValveState):
            raise Cjt188DataError(f"{self.valve!r} is not a valve state")
        word = int(self.valve) | (0x04 if self.battery_low else 0) | self.other_bits
        return word.to_bytes(2, "little")

    @classmethod
    def from_wire(cls, raw: bytes) -> MeterStatus:
        if len(raw) != 2:
            raise Cjt188DataError(f"status takes 2 bytes, got {len(raw)}")
        word = int.from_bytes(raw, "little")
        return cls(ValveState(word & 0x03), bool(word & 0x04), word & ~0x07)


@dataclass(frozen=True, slots=True)
class MeterReading:
    """The 901F payload: cumulative and settlement-day volume, meter clock, status."""

    volume_m3: Decimal
    settlement_volume_m3: Decimal
    clock: datetime
    status: MeterStatus


class Cjt188RefusedError(Cjt188Error):
    """The meter answered with an error reply (C1, C4, …)."""

    def __init__(self, function: int, status: MeterStatus | None) -> None:
        self.function = function
        self.status = status
        super().__init__(f"meter refused function {function:02X} (status {status})")


def _volume_to_wire(volume: Decimal, field: str) -> bytes:
    try:
        return bcd.encode_decimal(volume, 4, 2, field=field) + bytes([UNIT_CUBIC_METRE])
    except bcd.BcdError as error:
        raise Cjt188DataError(str(error)) from None


def _volume_from_wire(raw: bytes) -> Decimal:
    """4 BCD bytes + unit byte; litres are converted to m³ exactly."""
    shift = {UNIT_CUBIC_METRE: 0, UNIT_LITRE: -3}.get(raw[4])
    if shift is None:
        raise Cjt188DataError(f"volume unit {raw[4]:02X} is not m³ (2C) or L (29)")
    return bcd.decode_decimal(raw[:4], 2).scaleb(shift)


def clock_to_wire(moment: datetime, zone: tzinfo) -> bytes:
    """``ss mm hh DD MM YYYY`` (year low pair first) of ``moment`` on the meter's wall clock."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise Cjt188DataError(f"{moment.isoformat()} has no time zone; pass an aware instant")
    local = moment.astimezone(zone)
    fields = (local.second, local.minute, local.hour, local.day, local.month)
    return bytes(bcd.int_to_byte(part) for part in fields) + bcd.encode_unsigned(local.year, 2)


def clock_from_wire(raw: bytes, zone: tzinfo) -> datetime:
    try:
        second, minute, hour, day, month = (bcd.byte_to_int(byte) for byte in raw[:5])
        year = bcd.decode_unsigned(raw[5:7])
        return datetime(year, month, day, hour, minute, second, tzinfo=zone)
    except (bcd.BcdError, ValueError) as error:
        raise Cjt188DataError(f"bad meter clock {raw.hex(' ').upper()}: {error}") from None


def _frame(
    address: str, control: int, di: int, seq: int, payload: bytes, meter_type: int, order: DiOrder
) -> Cjt188Frame:
    if not 0 <= seq <= 0xFF:
        raise Cjt188DataError(f"SER {seq} does not fit one byte")
    return Cjt188Frame(meter_type, address, control, di_to_wire(di, order) + bytes([seq]) + payload)


def read_meter_request(
    address: str,
    *,
    seq: int = 0,
    meter_type: int = MeterType.COLD_WATER,
    di_order: DiOrder = DiOrder.HIGH_FIRST,
) -> Cjt188Frame:
    """01 with DI 901F: read volume, clock and status."""
    return _frame(address, Function.READ, DI_READ_METER, seq, b"", meter_type, di_order)


def read_meter_reply(
    address: str,
    reading: MeterReading,
    *,
    zone: tzinfo,
    seq: int = 0,
    meter_type: int = MeterType.COLD_WATER,
    di_order: DiOrder = DiOrder.HIGH_FIRST,
) -> Cjt188Frame:
    payload = (
        _volume_to_wire(reading.volume_m3, "volume_m3")
        + _volume_to_wire(reading.settlement_volume_m3, "settlement_volume_m3")
        + clock_to_wire(reading.clock, zone)
        + reading.status.to_wire()
    )
    control = Function.READ | REPLY_BIT
    return _frame(address, control, DI_READ_METER, seq, payload, meter_type, di_order)


def valve_control_request(
    address: str,
    command: ValveCommand,
    *,
    seq: int = 0,
    meter_type: int = MeterType.COLD_WATER,
    di_order: DiOrder = DiOrder.HIGH_FIRST,
) -> Cjt188Frame:
    """04 with DI A017: 55 open, 99 close (the valve then takes seconds to move)."""
    if command not in tuple(ValveCommand):
        raise Cjt188DataError(f"{command!r} is not a valve command (55 open, 99 close)")
    payload = bytes([command])
    return _frame(address, Function.WRITE, DI_VALVE_CONTROL, seq, payload, meter_type, di_order)


def valve_control_reply(
    address: str,
    status: MeterStatus,
    *,
    seq: int = 0,
    meter_type: int = MeterType.COLD_WATER,
    di_order: DiOrder = DiOrder.HIGH_FIRST,
) -> Cjt188Frame:
    """84: DI A017 + SER + status."""
    control = Function.WRITE | REPLY_BIT
    payload = status.to_wire()
    return _frame(address, control, DI_VALVE_CONTROL, seq, payload, meter_type, di_order)


def error_reply(
    address: str,
    function: int,
    status: MeterStatus,
    *,
    seq: int = 0,
    meter_type: int = MeterType.COLD_WATER,
) -> Cjt188Frame:
    """C1 / C4 …: SER + status, no DI."""
    if not 0 <= seq <= 0xFF:
        raise Cjt188DataError(f"SER {seq} does not fit one byte")
    control = (function & 0x3F) | REPLY_BIT | ERROR_BIT
    return Cjt188Frame(meter_type, address, control, bytes([seq]) + status.to_wire())


def _refuse_if_error(frame: Cjt188Frame) -> None:
    if frame.is_error:
        status = MeterStatus.from_wire(frame.data[1:3]) if len(frame.data) >= 3 else None
        raise Cjt188RefusedError(frame.function, status)


def _expect(
    frame: Cjt188Frame, function: Function, di: int, order: DiOrder, *, reply: bool
) -> bytes:
    """Check kind and DI; return the payload after DI and SER."""
    if reply:
        _refuse_if_error(frame)
    if frame.function != function or frame.is_reply != reply or frame.is_error:
        raise Cjt188DataError(f"expected function {function:02X}, got control {frame.control:02X}")
    if len(frame.data) < 3 or di_from_wire(frame.data, order) != di:
        raise Cjt188DataError(f"expected DI {di:04X} ({order.value}), got {frame.data[:2].hex()}")
    return frame.data[3:]


def parse_read_meter_reply(
    frame: Cjt188Frame, *, zone: tzinfo, di_order: DiOrder = DiOrder.HIGH_FIRST
) -> MeterReading:
    payload = _expect(frame, Function.READ, DI_READ_METER, di_order, reply=True)
    if len(payload) != READING_BYTES - 3:
        raise Cjt188DataError(
            f"901F reply payload takes {READING_BYTES - 3} bytes, got {len(payload)}"
        )
    try:
        volume, settlement = _volume_from_wire(payload[0:5]), _volume_from_wire(payload[5:10])
    except bcd.BcdError as error:
        raise Cjt188DataError(f"volume: {error}") from None
    clock = clock_from_wire(payload[10:17], zone)
    return MeterReading(volume, settlement, clock, MeterStatus.from_wire(payload[17:19]))


def parse_valve_control_request(
    frame: Cjt188Frame, *, di_order: DiOrder = DiOrder.HIGH_FIRST
) -> ValveCommand:
    payload = _expect(frame, Function.WRITE, DI_VALVE_CONTROL, di_order, reply=False)
    if len(payload) != 1 or payload[0] not in tuple(ValveCommand):
        raise Cjt188DataError(f"valve command must be 55 or 99, got {payload.hex()}")
    return ValveCommand(payload[0])


def parse_valve_control_reply(
    frame: Cjt188Frame, *, di_order: DiOrder = DiOrder.HIGH_FIRST
) -> MeterStatus | None:
    """The status a meter sends with its 84 reply, or ``None`` when it sends none."""
    payload = _expect(frame, Function.WRITE, DI_VALVE_CONTROL, di_order, reply=True)
    return MeterStatus.from_wire(payload) if payload else None


def parse_request_di(
    frame: Cjt188Frame, *, di_order: DiOrder = DiOrder.HIGH_FIRST
) -> tuple[int, int]:
    """DI and SER of any request, for a meter (simulator) deciding what was asked."""
    if frame.is_reply or len(frame.data) < 3:
        raise Cjt188DataError("not a request with DI and SER")
    return di_from_wire(frame.data, di_order), frame.data[2]
