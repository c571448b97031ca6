"""Binary-coded decimal helpers shared by the DL/T 645 and CJ/T 188 codecs.

Both standards send numbers as packed BCD, least significant byte first. Values come back as
exact ``Decimal`` scaled by a fixed number of decimal places; nothing here ever rounds.

Invariants:
- Every function raises :class:`BcdError` (a :class:`ValidationError`) on bad input, never
  ``ValueError`` or ``IndexError``, so a malformed frame cannot crash a poller.
- Signed BCD (DL/T 645) keeps the sign in the top bit of the most significant byte and the
  magnitude in the remaining bits; zero is always encoded without the sign bit and a decoded
  "negative zero" comes back as plain zero.
- An address is a string of BCD digit pairs, most significant pair first as people write it;
  on the wire the pairs are reversed. ``AA`` pairs are wildcards and allowed as such.
"""

from __future__ import annotations

import re
from decimal import Decimal

from meterdesk.shared.errors import ValidationError

WILDCARD_PAIR = "AA"


class BcdError(ValidationError):
    """A byte string or value that is not valid packed BCD for the field it is meant for."""


def byte_to_int(byte: int) -> int:
    """One packed BCD byte (two digits) as 0..99."""
    high, low = byte >> 4, byte & 0x0F
    if high > 9 or low > 9:
        raise BcdError(f"byte {byte:02X} is not BCD")
    return high * 10 + low


def int_to_byte(value: int) -> int:
    """0..99 as one packed BCD byte."""
    if not 0 <= value <= 99:
        raise BcdError(f"{value} does not fit one BCD byte")
    return (value // 10) << 4 | value % 10


def decode_unsigned(raw: bytes) -> int:
    """Little-endian packed BCD as an integer."""
    result = 0
    for byte in reversed(raw):
        result = result * 100 + byte_to_int(byte)
    return result


def encode_unsigned(value: int, byte_count: int) -> bytes:
    """A non-negative integer as ``byte_count`` little-endian packed BCD bytes."""
    if value < 0 or value >= 100**byte_count:
        raise BcdError(f"{value} does not fit {byte_count} BCD bytes")
    out = bytearray()
    for _ in range(byte_count):
        value, pair = divmod(value, 100)
        out.append(int_to_byte(pair))
    return bytes(out)


def decode_signed(raw: bytes) -> int:
    """Little-endian BCD whose most significant byte carries the sign in bit 7."""
    if not raw:
        raise BcdError("a signed BCD value needs at least one byte")
    negative = bool(raw[-1] & 0x80)
    magnitude = decode_unsigned(raw[:-1] + bytes([raw[-1] & 0x7F]))
    return -magnitude if negative else magnitude


def encode_signed(value: int, byte_count: int) -> bytes:
    """An integer as signed BCD; the magnitude's top digit may be at most 7."""
    limit = 8 * 10 ** (2 * byte_count - 1)
    if abs(value) >= limit:
        raise BcdError(f"{value} does not fit {byte_count} signed BCD bytes")
    raw = bytearray(encode_unsigned(abs(value), byte_count))
    if value < 0:
        raw[-1] |= 0x80
    return bytes(raw)


def scale_down(raw_value: int, decimals: int) -> Decimal:
    """An integer count of the smallest unit as a Decimal with exactly ``decimals`` places."""
    return Decimal(raw_value).scaleb(-decimals)


def scale_up(value: Decimal | int, decimals: int, *, field: str) -> int:
    """A Decimal as an integer count of ``10**-decimals`` units; refuses to round."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise BcdError(f"{field}: expected a Decimal, got {type(value).__name__}")
    exact = Decimal(value)
    if not exact.is_finite():
        raise BcdError(f"{field}: {value} is not a finite number")
    scaled = exact.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise BcdError(f"{field}: {value} has more than {decimals} decimal places")
    return int(scaled)


def decode_decimal(raw: bytes, decimals: int, *, signed: bool = False) -> Decimal:
    """BCD bytes as a Decimal with ``decimals`` places (``0`` never comes back negative)."""
    integer = decode_signed(raw) if signed else decode_unsigned(raw)
    return scale_down(integer, decimals)


def encode_decimal(
    value: Decimal | int, byte_count: int, decimals: int, *, signed: bool = False, field: str
) -> bytes:
    """A Decimal as BCD with ``decimals`` implied places; negative only when ``signed``."""
    integer = scale_up(value, decimals, field=field)
    if signed:
        return encode_signed(integer, byte_count)
    if integer < 0:
        raise BcdError(f"{field}: {value} cannot be negative")
    return encode_unsigned(integer, byte_count)


def address_pattern(pair_count: int) -> re.Pattern[str]:
    return re.compile(rf"(?:[0-9]{{2}}|{WILDCARD_PAIR}){{{pair_count}}}")


def address_to_wire(address: str, pair_count: int) -> bytes:
    """``"000000000001"`` → ``01 00 00 00 00 00`` (lowest pair first); ``AA`` pairs pass through."""
    if not isinstance(address, str) or not address_pattern(pair_count).fullmatch(address):
        raise BcdError(f"address {address!r} must be {2 * pair_count} digits (AA pairs allowed)")
    pairs = [address[i : i + 2] for i in range(0, len(address), 2)]
    return bytes(int(pair, 16) for pair in reversed(pairs))


def address_from_wire(raw: bytes) -> str:
    """Wire address bytes back to the written form; refuses anything but BCD pairs and AA."""
    text = "".join(f"{byte:02X}" for byte in reversed(raw))
    if not address_pattern(len(raw)).fullmatch(text):
        raise BcdError(f"address bytes {raw.hex(' ').upper()} are not BCD")
    return text
