"""DL/T 645-2007 link layer: the frame, its bytes, and a streaming decoder.

Wire form: ``[FE…] 68 A0..A5 68 C L DATA CS 16``. The address is 12 BCD digits, lowest pair
first; every DATA byte is sent +0x33; CS is the byte sum from the first ``68`` through the last
DATA byte. See ``docs/PROTOCOLS.md`` §1.

Invariants:
- :class:`Dlt645Frame` always holds the *plain* data (0x33 already removed) and an address of
  six BCD pairs or ``AA`` wildcards; a frame that exists can always be encoded.
- :class:`Dlt645Decoder` never raises on input: garbage, bad checksums and truncated frames are
  skipped byte by byte, so a good frame that follows (or hides inside) garbage is still found
  (see :mod:`meterdesk.devices.codecs.stream`).
- Nothing here reads a clock or touches a socket (sans-I/O, in the manner of h11).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from meterdesk.devices.codecs.bcd import BcdError, address_from_wire, address_to_wire
from meterdesk.devices.codecs.stream import FrameScanner, Verdict
from meterdesk.shared.errors import ValidationError

START = 0x68
END = 0x16
PREAMBLE_BYTE = 0xFE
SCRAMBLE = 0x33
ADDRESS_BYTES = 6
HEADER_BYTES = 10  # 68 + 6 address + 68 + C + L
MAX_DATA_BYTES = 255
BROADCAST_ADDRESS = "999999999999"
WILDCARD_ADDRESS = "AAAAAAAAAAAA"

DIRECTION_BIT = 0x80
ERROR_BIT = 0x40
MORE_BIT = 0x20
FUNCTION_MASK = 0x1F


class Dlt645Error(ValidationError):
    """Root of every DL/T 645 codec error."""


class Dlt645FrameError(Dlt645Error):
    """Bytes that are not one well-formed frame (start, length, checksum, end, address)."""


class Dlt645DataError(Dlt645Error):
    """A payload or value that does not fit its command or data identifier."""


class UnknownDataIdentifierError(Dlt645DataError):
    """A data identifier meterdesk has no format for."""


class Function(IntEnum):
    """Bits 4–0 of the control byte (the request code)."""

    SECURITY_AUTHENTICATION = 0x03
    BROADCAST_TIME_SYNC = 0x08
    READ = 0x11
    READ_FOLLOW_UP = 0x12
    READ_ADDRESS = 0x13
    WRITE = 0x14
    WRITE_ADDRESS = 0x15
    FREEZE = 0x16
    CHANGE_BAUD = 0x17
    CHANGE_PASSWORD = 0x18
    CLEAR_DEMAND = 0x19
    CLEAR_METER = 0x1A
    CLEAR_EVENTS = 0x1B
    RELAY_CONTROL = 0x1C


def control_code(
    function: int, *, reply: bool = False, error: bool = False, more: bool = False
) -> int:
    """Compose a control byte; ``error`` and ``more`` imply a reply."""
    if not 0 <= function <= FUNCTION_MASK:
        raise Dlt645Error(f"function code {function:#x} does not fit five bits")
    code = function
    if reply or error or more:
        code |= DIRECTION_BIT
    if error:
        code |= ERROR_BIT
    if more:
        code |= MORE_BIT
    return code


def function_of(control: int) -> int:
    return control & FUNCTION_MASK


def is_reply(control: int) -> bool:
    return bool(control & DIRECTION_BIT)


def is_error_reply(control: int) -> bool:
    return bool(control & DIRECTION_BIT) and bool(control & ERROR_BIT)


def has_more_frames(control: int) -> bool:
    return bool(control & DIRECTION_BIT) and bool(control & MORE_BIT)


def di_to_wire(di: int) -> bytes:
    """A data identifier as written (``DI3 DI2 DI1 DI0``) → plain bytes ``DI0..DI3``."""
    if not 0 <= di <= 0xFFFFFFFF:
        raise Dlt645DataError(f"data identifier {di:#x} does not fit four bytes")
    return di.to_bytes(4, "little")


def di_from_data(data: bytes) -> int:
    """The data identifier at the start of plain frame data."""
    if len(data) < 4:
        raise Dlt645DataError(f"{len(data)} data bytes cannot hold a data identifier")
    return int.from_bytes(data[:4], "little")


@dataclass(frozen=True, slots=True)
class Dlt645Frame:
    """One frame: address as written (12 digits), control byte, plain data (0x33 removed)."""

    address: str
    control: int
    data: bytes = b""

    def __post_init__(self) -> None:
        try:
            address_to_wire(self.address, ADDRESS_BYTES)
        except BcdError as error:
            raise Dlt645FrameError(str(error)) from None
        if not 0 <= self.control <= 0xFF:
            raise Dlt645FrameError(f"control byte {self.control} out of range")
        if len(self.data) > MAX_DATA_BYTES:
            raise Dlt645FrameError(f"{len(self.data)} data bytes exceed {MAX_DATA_BYTES}")

    @property
    def function(self) -> int:
        return function_of(self.control)

    @property
    def is_reply(self) -> bool:
        return is_reply(self.control)

    @property
    def is_error(self) -> bool:
        return is_error_reply(self.control)

    @property
    def has_more(self) -> bool:
        return has_more_frames(self.control)


def encode_frame(frame: Dlt645Frame, *, preamble: int = 4) -> bytes:
    """Wire bytes for ``frame`` with ``preamble`` FE wake-up bytes (0–4 in practice)."""
    if preamble < 0:
        raise Dlt645FrameError("preamble count cannot be negative")
    scrambled = bytes((byte + SCRAMBLE) & 0xFF for byte in frame.data)
    body = (
        bytes([START])
        + address_to_wire(frame.address, ADDRESS_BYTES)
        + bytes([START, frame.control, len(frame.data)])
        + scrambled
    )
    return bytes([PREAMBLE_BYTE]) * preamble + body + bytes([sum(body) & 0xFF, END])


def _try_parse(buffer: bytes | bytearray, at: int) -> tuple[Verdict, Dlt645Frame | None, int]:
    """Judge the candidate frame starting with the ``68`` at ``at``; return its end if complete."""
    available = len(buffer) - at
    if available > 7 and buffer[at + 7] != START:
        return Verdict.INVALID, None, 0
    if available < HEADER_BYTES:
        return Verdict.INCOMPLETE, None, 0
    length = buffer[at + 9]
    end = at + HEADER_BYTES + length + 2
    if len(buffer) < end:
        return Verdict.INCOMPLETE, None, 0
    checksum_at = end - 2
    if sum(buffer[at:checksum_at]) & 0xFF != buffer[checksum_at] or buffer[end - 1] != END:
        return Verdict.INVALID, None, 0
    try:
        address = address_from_wire(bytes(buffer[at + 1 : at + 7]))
    except BcdError:
        return Verdict.INVALID, None, 0
    data = bytes((byte - SCRAMBLE) & 0xFF for byte in buffer[at + HEADER_BYTES : checksum_at])
    return Verdict.COMPLETE, Dlt645Frame(address, buffer[at + 8], data), end


def decode_frame(raw: bytes) -> Dlt645Frame:
    """Exactly one frame, optionally preceded by FE bytes; anything else is an error."""
    start = 0
    while start < len(raw) and raw[start] == PREAMBLE_BYTE:
        start += 1
    if start >= len(raw) or raw[start] != START:
        raise Dlt645FrameError("no frame start (68) after the preamble")
    verdict, frame, end = _try_parse(raw, start)
    if verdict is Verdict.INCOMPLETE:
        raise Dlt645FrameError(f"truncated frame ({len(raw) - start} bytes)")
    if frame is None:
        raise Dlt645FrameError("bad frame: second 68, checksum, end byte or address")
    if end != len(raw):
        raise Dlt645FrameError(f"{len(raw) - end} unexpected bytes after the frame")
    return frame


class Dlt645Decoder(FrameScanner[Dlt645Frame]):
    """Turns a byte stream into frames; resynchronisation as in :mod:`.stream` (FE skipped)."""

    def __init__(self) -> None:
        super().__init__(bytes([START]), _try_parse, PREAMBLE_BYTE)
