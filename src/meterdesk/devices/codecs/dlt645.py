"""DL/T 645-2007 codec: the one module callers import (frames, builders, parsers, data table).

The implementation is split by concern so that each file stays readable:
``dlt645_frame`` (link layer and streaming decoder), ``dlt645_data`` (data identifiers),
``dlt645_commands`` (request and reply builders). This module re-exports them and adds the
parsers that turn a decoded frame into the meaning of its payload.

Invariants:
- Every parser checks the frame's function and direction first and raises
  :class:`Dlt645DataError` for a frame of another kind or a payload of the wrong length.
- An error reply is never mistaken for data: :func:`parse_read_reply` raises
  :class:`MeterRefusedError` carrying the meter's :class:`ErrorStatus`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo

from meterdesk.devices.codecs import bcd
from meterdesk.devices.codecs.dlt645_commands import (
    ALL_EVENTS,
    DEFAULT_OPERATOR_CODE,
    PASSWORD_DI_BASE,
    WILDCARD_FIELD,
    BaudRate,
    ErrorStatus,
    Password,
    RelayAction,
    change_baud_request,
    change_password_reply,
    change_password_request,
    clear_demand_request,
    clear_events_request,
    clear_meter_request,
    decode_wall_clock,
    encode_wall_clock,
    error_reply,
    follow_up_reply,
    freeze_request,
    normal_reply,
    read_address_reply,
    read_address_request,
    read_follow_up_request,
    read_reply,
    read_request,
    read_value_reply,
    relay_control_request,
    time_sync_request,
    write_address_request,
    write_request,
    write_value_request,
)
from meterdesk.devices.codecs.dlt645_data import (
    DATA_ITEMS,
    DataItem,
    DataValue,
    StatusWord3,
    ValueKind,
    data_item,
    data_item_named,
    decode_value,
    encode_value,
)
from meterdesk.devices.codecs.dlt645_frame import (
    BROADCAST_ADDRESS,
    WILDCARD_ADDRESS,
    Dlt645DataError,
    Dlt645Decoder,
    Dlt645Error,
    Dlt645Frame,
    Dlt645FrameError,
    Function,
    UnknownDataIdentifierError,
    control_code,
    decode_frame,
    di_from_data,
    di_to_wire,
    encode_frame,
    function_of,
    has_more_frames,
    is_error_reply,
    is_reply,
)

__all__ = [
    "ALL_EVENTS",
    "BROADCAST_ADDRESS",
    "DATA_ITEMS",
    "DEFAULT_OPERATOR_CODE",
    "PASSWORD_DI_BASE",
    "WILDCARD_ADDRESS",
    "WILDCARD_FIELD",
    "BaudRate",
    "DataItem",
    "DataValue",
    "Dlt645DataError",
    "Dlt645Decoder",
    "Dlt645Error",
    "Dlt645Frame",
    "Dlt645FrameError",
    "ErrorStatus",
    "FreezeTime",
    "Function",
    "MeterRefusedError",
    "Password",
    "ReadReply",
    "RelayAction",
    "RelayCommand",
    "StatusWord3",
    "UnknownDataIdentifierError",
    "ValueKind",
    "WriteCommand",
    "change_baud_request",
    "change_password_reply",
    "change_password_request",
    "clear_demand_request",
    "clear_events_request",
    "clear_meter_request",
    "control_code",
    "data_item",
    "data_item_named",
    "decode_frame",
    "decode_value",
    "decode_wall_clock",
    "di_from_data",
    "di_to_wire",
    "encode_frame",
    "encode_value",
    "encode_wall_clock",
    "error_reply",
    "error_status",
    "follow_up_reply",
    "freeze_request",
    "function_of",
    "has_more_frames",
    "is_error_reply",
    "is_reply",
    "normal_reply",
    "parse_authorisation",
    "parse_change_baud_request",
    "parse_freeze_request",
    "parse_read_address_reply",
    "parse_read_reply",
    "parse_read_request",
    "parse_relay_control_request",
    "parse_time_sync_request",
    "parse_write_request",
    "read_address_reply",
    "read_address_request",
    "read_follow_up_request",
    "read_reply",
    "read_request",
    "read_value_reply",
    "relay_control_request",
    "time_sync_request",
    "write_address_request",
    "write_request",
    "write_value_request",
]


class MeterRefusedError(Dlt645Error):
    """The meter answered with an error reply; ``status`` says why."""

    def __init__(self, function: int, status: ErrorStatus) -> None:
        self.function = function
        self.status = status
        names = "|".join(flag.name or "?" for flag in status) or f"{int(status):#04x}"
        super().__init__(f"meter refused function {function:02X}: {names}")


def _expect(frame: Dlt645Frame, function: Function, *, reply: bool) -> None:
    if frame.function != function or frame.is_reply != reply or frame.is_error:
        kind = "reply" if reply else "request"
        raise Dlt645DataError(f"expected a {function.name} {kind}, got control {frame.control:02X}")


def _expect_length(frame: Dlt645Frame, length: int, what: str) -> None:
    if len(frame.data) != length:
        raise Dlt645DataError(f"{what} takes {length} data bytes, got {len(frame.data)}")


def error_status(frame: Dlt645Frame) -> ErrorStatus:
    """The status byte of an error reply."""
    if not frame.is_error:
        raise Dlt645DataError(f"control {frame.control:02X} is not an error reply")
    _expect_length(frame, 1, "an error reply")
    return ErrorStatus(frame.data[0])


@dataclass(frozen=True, slots=True)
class ReadReply:
    """DI and raw value of a 91/B1 or 92/B2 reply; ``seq`` only on follow-up replies."""

    di: int
    raw: bytes
    seq: int | None = None
    more: bool = False

    def value(self) -> DataValue:
        return decode_value(self.di, self.raw)


def parse_read_reply(frame: Dlt645Frame) -> ReadReply:
    """A read (11) or follow-up (12) reply; an error reply raises :class:`MeterRefusedError`."""
    if frame.is_error and frame.function in (Function.READ, Function.READ_FOLLOW_UP):
        raise MeterRefusedError(frame.function, error_status(frame))
    if frame.is_reply and frame.function == Function.READ_FOLLOW_UP:
        if len(frame.data) < 5:
            raise Dlt645DataError("a follow-up reply needs DI and SEQ")
        return ReadReply(di_from_data(frame.data), frame.data[4:-1], frame.data[-1], frame.has_more)
    _expect(frame, Function.READ, reply=True)
    return ReadReply(di_from_data(frame.data), frame.data[4:], None, frame.has_more)


def parse_read_request(frame: Dlt645Frame) -> tuple[int, bytes]:
    """DI and any extra bytes (block count, load-record time) of an 11 request."""
    _expect(frame, Function.READ, reply=False)
    return di_from_data(frame.data), frame.data[4:]


@dataclass(frozen=True, slots=True)
class WriteCommand:
    di: int
    password: Password
    operator_code: str
    value: bytes


def parse_authorisation(data: bytes) -> tuple[Password, str]:
    """``PA P0..P2 C0..C3`` at the start of ``data``."""
    if len(data) < 8:
        raise Dlt645DataError("password and operator code need 8 bytes")
    return Password.from_wire(data[:4]), data[7:3:-1].hex().upper()


def parse_write_request(frame: Dlt645Frame) -> WriteCommand:
    _expect(frame, Function.WRITE, reply=False)
    password, operator = parse_authorisation(frame.data[4:])
    return WriteCommand(di_from_data(frame.data), password, operator, frame.data[12:])


@dataclass(frozen=True, slots=True)
class RelayCommand:
    action: RelayAction
    deadline: datetime
    password: Password
    operator_code: str


def parse_relay_control_request(frame: Dlt645Frame, zone: tzinfo) -> RelayCommand:
    """A 1C request; ``zone`` is the meter's, used to read the deadline."""
    _expect(frame, Function.RELAY_CONTROL, reply=False)
    _expect_length(frame, 16, "relay control")
    password, operator = parse_authorisation(frame.data)
    try:
        action = RelayAction(frame.data[8])
    except ValueError:
        raise Dlt645DataError(f"unknown relay action {frame.data[8]:02X}") from None
    return RelayCommand(action, decode_wall_clock(frame.data[10:16], zone), password, operator)


def parse_time_sync_request(frame: Dlt645Frame, zone: tzinfo) -> datetime:
    _expect(frame, Function.BROADCAST_TIME_SYNC, reply=False)
    return decode_wall_clock(frame.data, zone)


@dataclass(frozen=True, slots=True)
class FreezeTime:
    """When to freeze; ``None`` is the 99 wildcard."""

    month: int | None
    day: int | None
    hour: int | None
    minute: int | None


def parse_freeze_request(frame: Dlt645Frame) -> FreezeTime:
    _expect(frame, Function.FREEZE, reply=False)
    _expect_length(frame, 4, "freeze")
    try:
        minute, hour, day, month = (
            None if byte == WILDCARD_FIELD else bcd.byte_to_int(byte) for byte in frame.data
        )
    except bcd.BcdError as error:
        raise Dlt645DataError(f"freeze time: {error}") from None
    return FreezeTime(month, day, hour, minute)


def parse_change_baud_request(frame: Dlt645Frame) -> BaudRate:
    _expect(frame, Function.CHANGE_BAUD, reply=False)
    _expect_length(frame, 1, "change baud")
    try:
        return BaudRate(frame.data[0])
    except ValueError:
        raise Dlt645DataError(f"unknown baud code {frame.data[0]:02X}") from None


def parse_read_address_reply(frame: Dlt645Frame) -> str:
    _expect(frame, Function.READ_ADDRESS, reply=True)
    _expect_length(frame, 6, "a read-address reply")
    try:
        return bcd.address_from_wire(frame.data)
    except bcd.BcdError as error:
        raise Dlt645DataError(str(error)) from None
