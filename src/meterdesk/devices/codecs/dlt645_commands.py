"""DL/T 645-2007 requests and replies: builders for every control code and parsers for both ends.

A master (poller) builds requests and parses replies; the simulator does the opposite, so both
directions live here and stay symmetric. Payload layouts follow ``docs/PROTOCOLS.md`` §1.

Invariants:
- Builders return :class:`Dlt645Frame` values with plain data; only ``encode_frame`` scrambles.
- Times on the wire (time sync, relay deadline) are the meter's wall clock: callers pass an
  aware instant and the meter's zone, never a naive datetime, and parsers give back an aware
  instant in that zone. Years are two digits, so only 2000–2099 can be sent.
- Passwords and operator codes are strings of hex digits written most significant first
  (``"123456"``), sent lowest pair first like every multi-byte field.
- Parsers raise :class:`Dlt645DataError` for a frame of the wrong kind or shape, never
  ``IndexError``/``ValueError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, tzinfo
from enum import IntEnum, IntFlag

from meterdesk.devices.codecs import bcd
from meterdesk.devices.codecs.dlt645_data import DataValue, encode_value
from meterdesk.devices.codecs.dlt645_frame import (
    ADDRESS_BYTES,
    BROADCAST_ADDRESS,
    WILDCARD_ADDRESS,
    Dlt645DataError,
    Dlt645Frame,
    Function,
    control_code,
    di_to_wire,
)

ALL_EVENTS = 0xFFFFFFFF
PASSWORD_DI_BASE = 0x04000C01  # + password level (0–9)
WILDCARD_FIELD = 0x99  # freeze: "every" month/day/hour/minute
DEFAULT_OPERATOR_CODE = "00000000"


class RelayAction(IntEnum):
    """N1 of a 1C command."""

    TRIP = 0x1A
    CLOSE_ALLOWED = 0x1B  # supply returns when the user presses the meter button
    CLOSE_DIRECT = 0x1C
    ALARM_ON = 0x2A
    ALARM_OFF = 0x2B
    PROTECT_ON = 0x3A  # 保电: never trip
    PROTECT_OFF = 0x3B


class BaudRate(IntEnum):
    """The one-bit code of a 17 command."""

    BAUD_1200 = 0x04
    BAUD_2400 = 0x08
    BAUD_4800 = 0x10
    BAUD_9600 = 0x20
    BAUD_19200 = 0x40


class ErrorStatus(IntFlag):
    """The status byte of an error reply."""

    OTHER = 0x01
    NO_SUCH_DATA = 0x02
    UNAUTHORISED = 0x04  # wrong password or not allowed
    BAUD_NOT_CHANGEABLE = 0x08
    TOO_MANY_YEAR_ZONES = 0x10
    TOO_MANY_DAY_PERIODS = 0x20
    TOO_MANY_TARIFFS = 0x40


def _member(kind: type[IntEnum], value: int) -> int:
    """``value`` as a member of ``kind``, or a codec error (not ``ValueError``)."""
    try:
        return int(kind(value))
    except ValueError:
        raise Dlt645DataError(f"{value!r} is not a {kind.__name__}") from None


def _hex_to_wire(text: str, byte_count: int, field: str) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(rf"[0-9A-Fa-f]{{{2 * byte_count}}}", text):
        raise Dlt645DataError(f"{field} must be {2 * byte_count} hex digits, got {text!r}")
    return bytes.fromhex(text)[::-1]


@dataclass(frozen=True, slots=True)
class Password:
    """Authorisation level 0–9 and a six-digit password."""

    level: int
    code: str = "000000"

    def __post_init__(self) -> None:
        if isinstance(self.level, bool) or not 0 <= self.level <= 9:
            raise Dlt645DataError(f"password level {self.level} outside 0–9")
        _hex_to_wire(self.code, 3, "password")

    def to_wire(self) -> bytes:
        return bytes([self.level]) + _hex_to_wire(self.code, 3, "password")

    @classmethod
    def from_wire(cls, raw: bytes) -> Password:
        if len(raw) != 4:
            raise Dlt645DataError(f"a password takes 4 bytes, got {len(raw)}")
        return cls(raw[0], raw[:0:-1].hex().upper())


def _authorisation(password: Password, operator_code: str) -> bytes:
    return password.to_wire() + _hex_to_wire(operator_code, 4, "operator code")


def encode_wall_clock(moment: datetime, zone: tzinfo) -> bytes:
    """``ss mm hh DD MM YY`` of ``moment`` as the meter's clock in ``zone`` shows it."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise Dlt645DataError(f"{moment.isoformat()} has no time zone; pass an aware instant")
    local = moment.astimezone(zone)
    if not 2000 <= local.year <= 2099:
        raise Dlt645DataError(f"year {local.year} cannot be sent (two digits, 2000–2099)")
    fields = (local.second, local.minute, local.hour, local.day, local.month, local.year - 2000)
    return bytes(bcd.int_to_byte(field) for field in fields)


def decode_wall_clock(raw: bytes, zone: tzinfo) -> datetime:
    """The inverse of :func:`encode_wall_clock`."""
    if len(raw) != 6:
        raise Dlt645DataError(f"a date-time takes 6 bytes, got {len(raw)}")
    try:
        second, minute, hour, day, month, year = (bcd.byte_to_int(byte) for byte in raw)
        return datetime(2000 + year, month, day, hour, minute, second, tzinfo=zone)
    except (bcd.BcdError, ValueError) as error:
        raise Dlt645DataError(f"bad date-time {raw.hex(' ').upper()}: {error}") from None


def _request(address: str, function: Function, data: bytes = b"") -> Dlt645Frame:
    return Dlt645Frame(address, control_code(function), data)


# --- requests (master → meter) -------------------------------------------------------------


def read_request(address: str, di: int, *, extra: bytes = b"") -> Dlt645Frame:
    """11: read ``di``; ``extra`` carries a block count or time for load records."""
    return _request(address, Function.READ, di_to_wire(di) + extra)


def read_follow_up_request(address: str, di: int, seq: int) -> Dlt645Frame:
    """12: the next part of a multi-frame reply, numbered by ``seq`` (one byte)."""
    if not 0 <= seq <= 0xFF:
        raise Dlt645DataError(f"sequence number {seq} does not fit one byte")
    return _request(address, Function.READ_FOLLOW_UP, di_to_wire(di) + bytes([seq]))


def read_address_request() -> Dlt645Frame:
    """13 to the wildcard address: only valid with a single meter on the bus."""
    return _request(WILDCARD_ADDRESS, Function.READ_ADDRESS)


def write_request(
    address: str, di: int, value: bytes, *, password: Password, operator_code: str
) -> Dlt645Frame:
    """14 with raw value bytes (use :func:`write_value_request` for table-known DIs)."""
    data = di_to_wire(di) + _authorisation(password, operator_code) + value
    return _request(address, Function.WRITE, data)


def write_value_request(
    address: str, di: int, value: DataValue, *, password: Password, operator_code: str
) -> Dlt645Frame:
    raw = encode_value(di, value)
    return write_request(address, di, raw, password=password, operator_code=operator_code)


def write_address_request(new_address: str) -> Dlt645Frame:
    """15 to the wildcard address, data = the new address (lowest pair first)."""
    return _request(WILDCARD_ADDRESS, Function.WRITE_ADDRESS, _address_bytes(new_address))


def time_sync_request(moment: datetime, zone: tzinfo) -> Dlt645Frame:
    """08 broadcast: meters set their clock to ``moment`` in ``zone``; nobody replies."""
    return _request(
        BROADCAST_ADDRESS, Function.BROADCAST_TIME_SYNC, encode_wall_clock(moment, zone)
    )


def freeze_request(
    *,
    month: int | None = None,
    day: int | None = None,
    hour: int | None = None,
    minute: int | None = None,
    address: str = BROADCAST_ADDRESS,
) -> Dlt645Frame:
    """16: freeze at ``mm hh DD MM``; ``None`` is the 99 wildcard (all ``None`` = now)."""
    fields = ((minute, 0, 59), (hour, 0, 23), (day, 1, 31), (month, 1, 12))
    if any(part is not None and not low <= part <= high for part, low, high in fields):
        raise Dlt645DataError(f"freeze time out of range: month {month} day {day} {hour}:{minute}")
    data = bytes(WILDCARD_FIELD if part is None else bcd.int_to_byte(part) for part, _, _ in fields)
    return _request(address, Function.FREEZE, data)


def change_baud_request(address: str, baud: BaudRate) -> Dlt645Frame:
    return _request(address, Function.CHANGE_BAUD, bytes([_member(BaudRate, baud)]))


def change_password_request(address: str, *, old: Password, new: Password) -> Dlt645Frame:
    """18: the DI names the level being set (``04000C01`` + level)."""
    data = di_to_wire(PASSWORD_DI_BASE + new.level) + old.to_wire() + new.to_wire()
    return _request(address, Function.CHANGE_PASSWORD, data)


def clear_demand_request(address: str, *, password: Password, operator_code: str) -> Dlt645Frame:
    return _request(address, Function.CLEAR_DEMAND, _authorisation(password, operator_code))


def clear_meter_request(address: str, *, password: Password, operator_code: str) -> Dlt645Frame:
    return _request(address, Function.CLEAR_METER, _authorisation(password, operator_code))


def clear_events_request(
    address: str, *, password: Password, operator_code: str, event_di: int = ALL_EVENTS
) -> Dlt645Frame:
    data = _authorisation(password, operator_code) + di_to_wire(event_di)
    return _request(address, Function.CLEAR_EVENTS, data)


def relay_control_request(
    address: str,
    action: RelayAction,
    *,
    deadline: datetime,
    zone: tzinfo,
    password: Password,
    operator_code: str,
) -> Dlt645Frame:
    """1C: ``PA P0..P2 | C0..C3 | N1 | N2=00 | deadline`` (16 bytes)."""
    data = (
        _authorisation(password, operator_code)
        + bytes([_member(RelayAction, action), 0x00])
        + encode_wall_clock(deadline, zone)
    )
    return _request(address, Function.RELAY_CONTROL, data)


# --- replies (meter → master) --------------------------------------------------------------


def _address_bytes(address: str) -> bytes:
    try:
        return bcd.address_to_wire(address, ADDRESS_BYTES)
    except bcd.BcdError as error:
        raise Dlt645DataError(str(error)) from None


def normal_reply(
    address: str, function: int, data: bytes = b"", *, more: bool = False
) -> Dlt645Frame:
    """A successful reply (direction bit set, plus the more-frames bit when ``more``)."""
    return Dlt645Frame(address, control_code(function, reply=True, more=more), data)


def error_reply(address: str, function: int, status: ErrorStatus) -> Dlt645Frame:
    """An error reply: direction and error bits, data = the status byte."""
    return Dlt645Frame(address, control_code(function, error=True), bytes([ErrorStatus(status)]))


def read_reply(address: str, di: int, value: bytes, *, more: bool = False) -> Dlt645Frame:
    """91 (B1 when more frames follow): DI + value bytes."""
    return normal_reply(address, Function.READ, di_to_wire(di) + value, more=more)


def read_value_reply(address: str, di: int, value: DataValue) -> Dlt645Frame:
    return read_reply(address, di, encode_value(di, value))


def follow_up_reply(
    address: str, di: int, value: bytes, seq: int, *, more: bool = False
) -> Dlt645Frame:
    """92 (B2 when still more follows): DI + value + SEQ."""
    if not 0 <= seq <= 0xFF:
        raise Dlt645DataError(f"sequence number {seq} does not fit one byte")
    data = di_to_wire(di) + value + bytes([seq])
    return normal_reply(address, Function.READ_FOLLOW_UP, data, more=more)


def read_address_reply(address: str) -> Dlt645Frame:
    """93: the meter's own address, also as data."""
    return normal_reply(address, Function.READ_ADDRESS, _address_bytes(address))


def change_password_reply(address: str, new: Password) -> Dlt645Frame:
    return normal_reply(address, Function.CHANGE_PASSWORD, new.to_wire())
