"""What a simulated electricity meter answers for each DL/T 645 data identifier (pure).

:func:`read_value` gives the typed value of every identifier in the codec's table that the
meter has (``None`` = "no such data": phases B/C of a single-phase meter, a previous settlement
not yet frozen, an identifier outside the table). :func:`write_value` applies a 14 write of the
writable parameters: alarm amounts, overdraft / hoarding / close-allowed amounts, prices of
tariffs 1–4, date and time.

Invariants: values always fit their identifier's format (magnitudes are clamped to the largest
value the BCD field can carry instead of failing the reply); a refused write changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal

from meterdesk.devices.codecs.dlt645 import DATA_ITEMS, DataItem, DataValue, StatusWord3
from meterdesk.simulator.meter import ElectricityMeter, Instantaneous
from meterdesk.simulator.prepaid import CommandRefused, PrepaidEngine
from meterdesk.simulator.profiles import Band

PHASE_LETTERS = {"a": 0, "b": 1, "c": 2}
ENERGY_DI3 = 0x00
BLOCK_TARIFF = 0xFF
_PREPAID_SETTING_DIS: dict[int, str] = {
    0x04001001: "alarm_1",
    0x04001002: "alarm_2",
    0x04001003: "overdraft_limit",
    0x04001004: "hoarding_limit",
    0x04001005: "close_allowed_amount",
}
_SETTERS: dict[int, Callable[[PrepaidEngine, Decimal], None]] = {
    0x04001001: lambda engine, value: engine.update_settings(alarm_1=value),
    0x04001002: lambda engine, value: engine.update_settings(alarm_2=value),
    0x04001003: lambda engine, value: engine.update_settings(overdraft_limit=value),
    0x04001004: lambda engine, value: engine.update_settings(hoarding_limit=value),
    0x04001005: lambda engine, value: engine.update_settings(close_allowed_amount=value),
}
DATE_DI = 0x04000101
TIME_DI = 0x04000102
PRICE_DIS = {0x04050100 | band: Band(band) for band in range(1, 5)}
WRITABLE_DIS = frozenset({*_PREPAID_SETTING_DIS, *PRICE_DIS, DATE_DI, TIME_DI})


def _clamp(item: DataItem, value: Decimal) -> Decimal:
    digits = 2 * item.byte_count
    largest = (8 * 10 ** (digits - 1) - 1) if item.signed else (10**digits - 1)
    bound = Decimal(largest).scaleb(-item.decimals)
    low = -bound if item.signed else Decimal(0)
    clamped = min(max(value, low), bound)
    return clamped.quantize(Decimal(1).scaleb(-item.decimals))


def _energy(meter: ElectricityMeter, di: int) -> DataValue | None:
    quantity, tariff, settlement = (di >> 16) & 0xFF, (di >> 8) & 0xFF, di & 0xFF
    registers = (
        meter.energy_registers() if settlement == 0 else meter.settlement_registers(settlement)
    )
    if registers is None or quantity > 0x02 or (tariff > 4 and tariff != BLOCK_TARIFF):
        return None
    if quantity == 0x02:  # reverse active: the simulated loads never export
        registers = (Decimal("0.00"),) * 5
    return tuple(registers) if tariff == BLOCK_TARIFF else registers[tariff]


def _per_phase(values: tuple[Decimal, ...], letter: str) -> Decimal | None:
    index = PHASE_LETTERS[letter]
    return values[index] if index < len(values) else None


def _instantaneous(meter: ElectricityMeter, name: str, now: datetime) -> Decimal | None:
    values: Instantaneous = meter.instantaneous(now)
    quantity, _, part = name.rpartition("_")
    if name == "frequency":
        return values.frequency_hz
    per_phase = {
        "voltage": values.voltage_v,
        "current": values.current_a,
        "active_power": values.active_kw,
        "reactive_power": values.reactive_kvar,
        "apparent_power": values.apparent_kva,
        "power_factor": (values.power_factor,) * len(values.voltage_v),
    }
    if quantity not in per_phase:
        return None
    if part == "total":
        if quantity == "power_factor":
            return values.power_factor
        return sum(per_phase[quantity], Decimal(0))
    return _per_phase(per_phase[quantity], part)


def status_word_3(meter: ElectricityMeter) -> StatusWord3:
    engine = meter.engine
    return StatusWord3.build(
        relay_open=engine.relay_open,
        relay_commanded_open=engine.commanded_open,
        pre_trip_alarm=engine.pre_trip_alarm,
        protected=engine.protected,
    )


def _parameters(meter: ElectricityMeter, now: datetime) -> dict[str, DataValue]:
    engine = meter.engine
    shown = meter.clock.read(now).astimezone(meter.zone)
    money = engine.displayed_money
    settings = engine.settings
    values: dict[str, DataValue] = {
        "remaining_money": max(money, Decimal("0.00")),
        "overdraft_money": max(-money, Decimal("0.00")),
        "date": shown.date(),
        "time": shown.time().replace(microsecond=0),
        "communication_address": f"{meter.address:012d}",
        "status_word_3": status_word_3(meter),
    }
    for di, setting in _PREPAID_SETTING_DIS.items():
        values[DATA_ITEMS[di].name] = getattr(settings, setting)
    for di, band in PRICE_DIS.items():
        values[DATA_ITEMS[di].name] = settings.price(band)
    return values


def read_value(meter: ElectricityMeter, di: int, now: datetime) -> DataValue | None:
    """The value of ``di`` now, or ``None`` when this meter has no such data."""
    item = DATA_ITEMS.get(di)
    if item is None:
        return None
    meter.advance(now)
    value: DataValue | None
    if di >> 24 == ENERGY_DI3 and item.unit == "kWh":
        value = _energy(meter, di)
    elif di >> 24 == 0x02:
        value = _instantaneous(meter, item.name, now)
    else:
        value = _parameters(meter, now).get(item.name)
    if isinstance(value, Decimal):
        return _clamp(item, value)
    if isinstance(value, tuple):
        return tuple(_clamp(item, part) for part in value)
    return value


def write_value(meter: ElectricityMeter, di: int, value: DataValue, now: datetime) -> None:
    """Apply a write of ``di``; raises :class:`CommandRefused` when the meter says no."""
    meter.advance(now)
    engine = meter.engine
    if di in _SETTERS and isinstance(value, Decimal):
        _SETTERS[di](engine, value)
    elif di in PRICE_DIS and isinstance(value, Decimal):
        engine.set_price(PRICE_DIS[di], value)
    elif di == DATE_DI and isinstance(value, date):
        shown = meter.clock.read(now).astimezone(meter.zone)
        meter.clock.set(now, datetime.combine(value, shown.timetz()))
    elif di == TIME_DI and isinstance(value, time):
        shown = meter.clock.read(now).astimezone(meter.zone)
        meter.clock.set(now, datetime.combine(shown.date(), value, tzinfo=meter.zone))
    else:
        raise CommandRefused(f"data identifier {di:08X} cannot be written")
