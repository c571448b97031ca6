"""DL/T 645-2007 data identifiers: which DI means what, in which format, how many bytes.

The table covers every identifier in ``docs/PROTOCOLS.md`` §1: energy (combined, forward,
reverse × total, tariffs 1–4 and the FF block × current and 12 previous settlements), voltage,
current, active/reactive/apparent power, power factor, frequency, date, time, address, status
word 3 and the prepaid money items and prices.

Invariants:
- Values are exact: numbers are ``Decimal`` with the identifier's fixed number of places (a
  value with more places is refused, never rounded); dates are ``date``, times ``time``.
- Signed identifiers (current, powers, power factor) use signed BCD; everything else refuses
  negative values. Combined active energy is treated as unsigned because the protocol notes
  do not mark it signed.
- ``decode_value`` refuses a payload whose length is not the identifier's byte count, and
  ``decode_value(di, encode_value(di, value)) == value`` for every value that fits. (The other
  direction loses only what carries no information: a "negative zero" and a date's weekday,
  which is recomputed from the date.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum

from meterdesk.devices.codecs import bcd
from meterdesk.devices.codecs.dlt645_frame import (
    ADDRESS_BYTES,
    Dlt645DataError,
    UnknownDataIdentifierError,
)


class ValueKind(Enum):
    DECIMAL = "decimal"
    BLOCK = "block"  # several 4-byte energy values: total, tariff 1..4
    DATE = "date"  # YYMMDDWW, weekday 0 = Sunday
    TIME = "time"  # hhmmss
    ADDRESS = "address"
    STATUS_WORD = "status_word"


@dataclass(frozen=True, slots=True)
class StatusWord3:
    """Operating status word 3 (DI 04000503), a 16-bit binary word sent low byte first."""

    word: int

    RELAY_OPEN_BIT = 1 << 4  # relay actually open (supply off)
    RELAY_COMMANDED_OPEN_BIT = 1 << 6
    PRE_TRIP_ALARM_BIT = 1 << 7
    PROTECT_BIT = 1 << 12  # 保电: never trip

    @classmethod
    def build(
        cls,
        *,
        relay_open: bool = False,
        relay_commanded_open: bool = False,
        pre_trip_alarm: bool = False,
        protected: bool = False,
    ) -> StatusWord3:
        flags = (
            (relay_open, cls.RELAY_OPEN_BIT),
            (relay_commanded_open, cls.RELAY_COMMANDED_OPEN_BIT),
            (pre_trip_alarm, cls.PRE_TRIP_ALARM_BIT),
            (protected, cls.PROTECT_BIT),
        )
        return cls(sum(bit for on, bit in flags if on))

    @property
    def relay_open(self) -> bool:
        return bool(self.word & self.RELAY_OPEN_BIT)

    @property
    def relay_commanded_open(self) -> bool:
        return bool(self.word & self.RELAY_COMMANDED_OPEN_BIT)

    @property
    def pre_trip_alarm(self) -> bool:
        return bool(self.word & self.PRE_TRIP_ALARM_BIT)

    @property
    def protected(self) -> bool:
        return bool(self.word & self.PROTECT_BIT)


DataValue = Decimal | tuple[Decimal, ...] | date | time | str | StatusWord3


@dataclass(frozen=True, slots=True)
class DataItem:
    """Format of one data identifier; ``byte_count`` is the value's length after the DI."""

    di: int
    name: str
    unit: str
    byte_count: int
    kind: ValueKind = ValueKind.DECIMAL
    decimals: int = 0
    signed: bool = False


ENERGY_QUANTITIES = {0x00: "combined_active", 0x01: "forward_active", 0x02: "reverse_active"}
TARIFF_NAMES = {0x00: "total", 0x01: "sharp", 0x02: "peak", 0x03: "flat", 0x04: "valley"}
BLOCK_TARIFF = 0xFF
PHASES = {0x01: "a", 0x02: "b", 0x03: "c"}
SETTLEMENTS = range(0x00, 0x0D)  # 00 current, 01–0C previous settlement periods


def _energy_items() -> list[DataItem]:
    items: list[DataItem] = []
    for quantity, quantity_name in ENERGY_QUANTITIES.items():
        for settlement in SETTLEMENTS:
            suffix = "" if settlement == 0 else f"_settlement_{settlement}"
            base = quantity << 16 | settlement
            for tariff, tariff_name in TARIFF_NAMES.items():
                name = f"{quantity_name}_energy_{tariff_name}{suffix}"
                items.append(DataItem(base | tariff << 8, name, "kWh", 4, decimals=2))
            block_name = f"{quantity_name}_energy_block{suffix}"
            block_di = base | BLOCK_TARIFF << 8
            items.append(DataItem(block_di, block_name, "kWh", 20, ValueKind.BLOCK, 2))
    return items


def _instantaneous_items() -> list[DataItem]:
    items: list[DataItem] = []
    for phase, letter in PHASES.items():
        items.append(DataItem(0x02010000 | phase << 8, f"voltage_{letter}", "V", 2, decimals=1))
        items.append(
            DataItem(0x02020000 | phase << 8, f"current_{letter}", "A", 3, decimals=3, signed=True)
        )
    powers = {
        0x03: ("active_power", "kW"),
        0x04: ("reactive_power", "kvar"),
        0x05: ("apparent_power", "kVA"),
    }
    for code, (name, unit) in powers.items():
        items.append(
            DataItem(0x02000000 | code << 16, f"{name}_total", unit, 3, decimals=4, signed=True)
        )
        for phase, letter in PHASES.items():
            di = 0x02000000 | code << 16 | phase << 8
            items.append(DataItem(di, f"{name}_{letter}", unit, 3, decimals=4, signed=True))
    items.append(DataItem(0x02060000, "power_factor_total", "", 2, decimals=3, signed=True))
    for phase, letter in PHASES.items():
        di = 0x02060000 | phase << 8
        items.append(DataItem(di, f"power_factor_{letter}", "", 2, decimals=3, signed=True))
    items.append(DataItem(0x02800002, "frequency", "Hz", 2, decimals=2))
    return items


def _parameter_items() -> list[DataItem]:
    money = {
        0x00900200: "remaining_money",
        0x00900201: "overdraft_money",
        0x04001001: "alarm_amount_1",
        0x04001002: "alarm_amount_2",
        0x04001003: "overdraft_limit",
        0x04001004: "hoarding_limit",
        0x04001005: "close_allowed_amount",
    }
    items = [DataItem(di, name, "CNY", 4, decimals=2) for di, name in money.items()]
    for tariff in range(1, 5):
        items.append(
            DataItem(0x04050100 | tariff, f"price_tariff_{tariff}", "CNY/kWh", 4, decimals=4)
        )
    items += [
        DataItem(0x04000101, "date", "", 4, ValueKind.DATE),
        DataItem(0x04000102, "time", "", 3, ValueKind.TIME),
        DataItem(0x04000401, "communication_address", "", ADDRESS_BYTES, ValueKind.ADDRESS),
        DataItem(0x04000503, "status_word_3", "", 2, ValueKind.STATUS_WORD),
    ]
    return items


DATA_ITEMS: dict[int, DataItem] = {
    item.di: item for item in (*_energy_items(), *_instantaneous_items(), *_parameter_items())
}
DATA_ITEMS_BY_NAME: dict[str, DataItem] = {item.name: item for item in DATA_ITEMS.values()}


def data_item(di: int) -> DataItem:
    try:
        return DATA_ITEMS[di]
    except KeyError:
        raise UnknownDataIdentifierError(f"unknown data identifier {di:08X}") from None


def data_item_named(name: str) -> DataItem:
    try:
        return DATA_ITEMS_BY_NAME[name]
    except KeyError:
        raise UnknownDataIdentifierError(f"no data identifier is named {name!r}") from None


def decode_value(di: int, raw: bytes) -> DataValue:
    """The typed value of ``raw`` (the bytes after the DI, 0x33 removed) for ``di``."""
    item = data_item(di)
    if len(raw) != item.byte_count:
        raise Dlt645DataError(
            f"{item.name} ({di:08X}) needs {item.byte_count} bytes, got {len(raw)}"
        )
    try:
        return _DECODERS[item.kind](item, raw)
    except (bcd.BcdError, ValueError) as error:  # ValueError: an impossible date or time
        raise Dlt645DataError(f"{item.name} ({di:08X}): {error}") from None


def encode_value(di: int, value: DataValue) -> bytes:
    """The bytes that follow ``di`` in a reply or write (before the +0x33 scrambling)."""
    item = data_item(di)
    try:
        return _ENCODERS[item.kind](item, value)
    except bcd.BcdError as error:
        raise Dlt645DataError(f"{item.name} ({di:08X}): {error}") from None


def _decode_decimal(item: DataItem, raw: bytes) -> Decimal:
    return bcd.decode_decimal(raw, item.decimals, signed=item.signed)


def _decode_block(item: DataItem, raw: bytes) -> tuple[Decimal, ...]:
    return tuple(
        bcd.decode_decimal(raw[at : at + 4], item.decimals) for at in range(0, len(raw), 4)
    )


def _decode_date(item: DataItem, raw: bytes) -> date:
    # Wire order WW DD MM YY; the weekday is derived from the date, so it is not kept.
    bcd.byte_to_int(raw[0])
    return date(2000 + bcd.byte_to_int(raw[3]), bcd.byte_to_int(raw[2]), bcd.byte_to_int(raw[1]))


def _decode_time(item: DataItem, raw: bytes) -> time:
    return time(bcd.byte_to_int(raw[2]), bcd.byte_to_int(raw[1]), bcd.byte_to_int(raw[0]))


def _decode_address(item: DataItem, raw: bytes) -> str:
    return bcd.address_from_wire(raw)


def _decode_status(item: DataItem, raw: bytes) -> StatusWord3:
    return StatusWord3(int.from_bytes(raw, "little"))


def _wrong_type(item: DataItem, value: object) -> Dlt645DataError:
    return Dlt645DataError(f"{item.name}: {value!r} is not a {item.kind.value} value")


def _encode_decimal(item: DataItem, value: DataValue) -> bytes:
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise _wrong_type(item, value)
    return bcd.encode_decimal(
        value, item.byte_count, item.decimals, signed=item.signed, field=item.name
    )


def _encode_block(item: DataItem, value: DataValue) -> bytes:
    if not isinstance(value, tuple):
        raise _wrong_type(item, value)
    count = item.byte_count // 4
    if len(value) != count:
        raise Dlt645DataError(f"{item.name}: needs {count} values, got {len(value)}")
    return b"".join(bcd.encode_decimal(part, 4, item.decimals, field=item.name) for part in value)


def _encode_date(item: DataItem, value: DataValue) -> bytes:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise _wrong_type(item, value)
    if not 2000 <= value.year <= 2099:
        raise Dlt645DataError(f"{item.name}: year {value.year} outside 2000–2099")
    weekday = value.isoweekday() % 7  # 0 = Sunday
    fields = (weekday, value.day, value.month, value.year - 2000)
    return bytes(bcd.int_to_byte(field) for field in fields)


def _encode_time(item: DataItem, value: DataValue) -> bytes:
    if not isinstance(value, time):
        raise _wrong_type(item, value)
    return bytes(bcd.int_to_byte(field) for field in (value.second, value.minute, value.hour))


def _encode_address(item: DataItem, value: DataValue) -> bytes:
    if not isinstance(value, str):
        raise _wrong_type(item, value)
    return bcd.address_to_wire(value, ADDRESS_BYTES)


def _encode_status(item: DataItem, value: DataValue) -> bytes:
    if not isinstance(value, StatusWord3):
        raise _wrong_type(item, value)
    if not 0 <= value.word <= 0xFFFF:
        raise Dlt645DataError(f"{item.name}: {value.word} does not fit 16 bits")
    return value.word.to_bytes(2, "little")


_DECODERS: dict[ValueKind, Callable[[DataItem, bytes], DataValue]] = {
    ValueKind.DECIMAL: _decode_decimal,
    ValueKind.BLOCK: _decode_block,
    ValueKind.DATE: _decode_date,
    ValueKind.TIME: _decode_time,
    ValueKind.ADDRESS: _decode_address,
    ValueKind.STATUS_WORD: _decode_status,
}
_ENCODERS: dict[ValueKind, Callable[[DataItem, DataValue], bytes]] = {
    ValueKind.DECIMAL: _encode_decimal,
    ValueKind.BLOCK: _encode_block,
    ValueKind.DATE: _encode_date,
    ValueKind.TIME: _encode_time,
    ValueKind.ADDRESS: _encode_address,
    ValueKind.STATUS_WORD: _encode_status,
}
