"""HJ212-2017 packets: ``##`` + 4-digit length + data segment + 4 hex CRC + ``\\r\\n``.

The data segment is ``QN=…;ST=…;CN=…;PW=…;MN=…;Flag=…;CP=&&key=value;k=v,k=v&&``: header
fields separated by ``;``, then the command parameters (CP) between ``&&`` markers, in groups
separated by ``;`` whose items are separated by ``,`` (``w01018-Rtd=1.1,w01018-Flag=N``).

Invariants:
- The CRC is HJ212's own (see :func:`crc16`), *not* CRC-16/MODBUS: the standard's sample
  checks as 1C80 here and would be 0759 with MODBUS. It covers the data segment only.
- The length is the data segment's byte count (ASCII only), four decimal digits.
- Values stay strings: the segment is text and its numbers are decimal text already; callers
  turn them into ``Decimal`` where they know the unit. ``parse_segment(build_segment(m)) == m``.
- Every failure is an :class:`Hj212Error`; the decoder skips what it cannot read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from meterdesk.devices.codecs.stream import FrameScanner, Verdict
from meterdesk.shared.errors import ValidationError

HEAD = b"##"
TAIL = b"\r\n"
CP_OPEN = "CP=&&"
CP_CLOSE = "&&"
MAX_SEGMENT_LENGTH = 9999  # what four digits can say
_TOKEN = re.compile(r"[^;,=&\r\n]*")

Pairs = tuple[tuple[str, str], ...]


class Hj212Error(ValidationError):
    """A packet or data segment that does not follow HJ212-2017."""


def crc16(data: bytes) -> int:
    """HJ212's CRC: start FFFF; per byte ``crc = (crc >> 8) ^ byte`` then 8 rounds of A001."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def encode_packet(segment: str) -> bytes:
    """Wrap a data segment with head, length, CRC and tail."""
    try:
        body = segment.encode("ascii")
    except UnicodeEncodeError:
        raise Hj212Error("the data segment must be ASCII") from None
    if len(body) > MAX_SEGMENT_LENGTH:
        raise Hj212Error(f"data segment of {len(body)} bytes does not fit four digits")
    return HEAD + f"{len(body):04d}".encode() + body + f"{crc16(body):04X}".encode() + TAIL


def decode_packet(raw: bytes) -> str:
    """The data segment of exactly one packet, after checking length and CRC."""
    if not raw.startswith(HEAD) or not raw.endswith(TAIL):
        raise Hj212Error("a packet starts with ## and ends with CR LF")
    length_text = raw[2:6]
    if len(length_text) != 4 or not length_text.isdigit():
        raise Hj212Error(f"bad length field {length_text!r}")
    length = int(length_text)
    if len(raw) != 2 + 4 + length + 4 + 2:
        raise Hj212Error(f"length field says {length}, packet holds {len(raw) - 12}")
    body, crc_text = raw[6 : 6 + length], raw[6 + length : 10 + length]
    if not re.fullmatch(rb"[0-9A-Fa-f]{4}", crc_text):
        raise Hj212Error(f"bad CRC field {crc_text!r}")
    if int(crc_text, 16) != crc16(body):
        raise Hj212Error(f"CRC {crc_text.decode()} does not match {crc16(body):04X}")
    try:
        return body.decode("ascii")
    except UnicodeDecodeError:
        raise Hj212Error("the data segment is not ASCII") from None


@dataclass(frozen=True, slots=True)
class Hj212Message:
    """Header fields in order (QN, ST, CN, PW, MN, Flag, …) and the CP groups."""

    fields: Pairs
    cp: tuple[Pairs, ...] = field(default=())

    def field(self, key: str) -> str | None:
        return dict(self.fields).get(key)

    @property
    def qn(self) -> str | None:
        return self.field("QN")

    @property
    def st(self) -> str | None:
        return self.field("ST")

    @property
    def cn(self) -> str | None:
        return self.field("CN")

    @property
    def pw(self) -> str | None:
        return self.field("PW")

    @property
    def mn(self) -> str | None:
        return self.field("MN")

    @property
    def flag(self) -> str | None:
        return self.field("Flag")

    def cp_values(self) -> dict[str, str]:
        """All CP items in one mapping (keys are unique in practice)."""
        return {key: value for group in self.cp for key, value in group}

    def pollutants(self) -> dict[str, dict[str, str]]:
        """``{"w01018": {"Rtd": "1.1", "Flag": "N"}}`` from ``code-Suffix=value`` items."""
        result: dict[str, dict[str, str]] = {}
        for key, value in self.cp_values().items():
            code, dash, suffix = key.partition("-")
            if dash:
                result.setdefault(code, {})[suffix] = value
        return result


def _pair(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise Hj212Error(f"expected key=value, got {text!r}")
    if not _TOKEN.fullmatch(value):
        raise Hj212Error(f"separator inside the value of {key}: {value!r}")
    return key, value


def parse_segment(segment: str) -> Hj212Message:
    """Split a data segment into header fields and CP groups."""
    at = segment.find(CP_OPEN)
    if at < 0 or (at > 0 and segment[at - 1] != ";"):
        raise Hj212Error("the data segment has no CP=&&…&& part")
    if not segment.endswith(CP_CLOSE) or len(segment) < at + len(CP_OPEN) + len(CP_CLOSE):
        raise Hj212Error("the CP part must end the data segment with &&")
    header = segment[: max(at - 1, 0)]
    fields = tuple(_pair(part) for part in header.split(";")) if header else ()
    body = segment[at + len(CP_OPEN) : -len(CP_CLOSE)]
    groups = body.split(";") if body else []
    return Hj212Message(fields, tuple(tuple(map(_pair, group.split(","))) for group in groups))


def _check_token(text: str, what: str) -> str:
    if not _TOKEN.fullmatch(text):
        raise Hj212Error(f"{what} {text!r} contains a separator (; , = & CR LF)")
    return text


def _item(key: str, value: str) -> str:
    if not key:
        raise Hj212Error("an empty key cannot be sent")
    return f"{_check_token(key, 'key')}={_check_token(value, 'value')}"


def build_segment(message: Hj212Message) -> str:
    """The data segment for ``message`` (the inverse of :func:`parse_segment`)."""
    if any(not group for group in message.cp):
        raise Hj212Error("an empty CP group cannot be sent")
    header = "".join(f"{_item(key, value)};" for key, value in message.fields)
    groups = ";".join(",".join(_item(key, value) for key, value in group) for group in message.cp)
    return f"{header}{CP_OPEN}{groups}{CP_CLOSE}"


def encode_message(message: Hj212Message) -> bytes:
    return encode_packet(build_segment(message))


def decode_message(raw: bytes) -> Hj212Message:
    return parse_segment(decode_packet(raw))


def _judge(buffer: bytearray, at: int) -> tuple[Verdict, Hj212Message | None, int]:
    """Judge the candidate packet starting with the ``##`` at ``at``."""
    length_text = bytes(buffer[at + 2 : at + 6])
    if any(not 0x30 <= byte <= 0x39 for byte in length_text):  # the length is four digits
        return Verdict.INVALID, None, 0
    if len(length_text) < 4:
        return Verdict.INCOMPLETE, None, 0
    end = at + 12 + int(length_text)
    if len(buffer) < end:
        return Verdict.INCOMPLETE, None, 0
    try:
        return Verdict.COMPLETE, decode_message(bytes(buffer[at:end])), end
    except Hj212Error:
        return Verdict.INVALID, None, 0


class Hj212Decoder(FrameScanner[Hj212Message]):
    """Finds packets in a TCP byte stream; resynchronisation as in :mod:`.stream`."""

    def __init__(self) -> None:
        super().__init__(HEAD, _judge)
