"""The reference prepaid map's values of a simulated meter, and writes back into it (pure).

Names are the register names of ``devices/maps/reference_prepaid.json``; values are in the
register's unit (kWh, V, A, kW, CNY, …) before scaling. Status bits (0025H): bit0 alarm 1
reached (or the alarm switched on remotely), bit1 alarm 2 reached, bit2 overdraft, bit3
protect, bit4 relay open (tripped).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from meterdesk.devices.codecs.modbus_map import (
    RECHARGE_AMOUNT,
    RECHARGE_COUNT,
    TAKE_BACK_AMOUNT,
    TAKE_BACK_COUNT,
    TAKE_BACK_REQUEST_COUNT,
)
from meterdesk.simulator.meter import ElectricityMeter
from meterdesk.simulator.prepaid import PrepaidEngine, RelayCommand

CLOCK_FIELDS = ("year", "month", "day", "hour", "minute", "second")
_SETTING_REGISTERS = {
    "alarm_1_cny": "alarm_1",
    "alarm_2_cny": "alarm_2",
    "overdraft_limit_cny": "overdraft_limit",
}
_PRICE_REGISTERS = tuple(f"price_tariff_{band}_per_kwh" for band in range(1, 5))


def status_bits(engine: PrepaidEngine) -> int:
    flags = (
        engine.below_alarm_1 or engine.alarm_commanded,
        engine.below_alarm_2,
        engine.bills_itself and engine.money < 0,
        engine.protected,
        engine.relay_open,
    )
    return sum(1 << bit for bit, on in enumerate(flags) if on)


def _clock_values(meter: ElectricityMeter, now: datetime) -> dict[str, int]:
    shown = meter.clock.read(now).astimezone(meter.zone)
    parts = (shown.year % 100, shown.month, shown.day, shown.hour, shown.minute, shown.second)
    return {f"clock_{name}": value for name, value in zip(CLOCK_FIELDS, parts, strict=True)}


def register_values(meter: ElectricityMeter, now: datetime) -> dict[str, Decimal | int]:
    """Every readable register's value now (write-only registers are left out: they read 0)."""
    meter.advance(now)
    total, sharp, peak, flat, valley = meter.energy_registers()
    values = meter.instantaneous(now)
    engine, settings = meter.engine, meter.engine.settings
    result: dict[str, Decimal | int] = {
        "energy_kwh": total,
        "energy_sharp_kwh": sharp,
        "energy_peak_kwh": peak,
        "energy_flat_kwh": flat,
        "energy_valley_kwh": valley,
        "voltage_v": values.voltage_v[0],
        "current_a": values.current_a[0],
        "power_kw": values.total_active_kw,
        "apparent_power_kva": values.total_apparent_kva,
        "power_factor": values.power_factor,
        "frequency_hz": values.frequency_hz,
        "reactive_power_kvar": values.total_reactive_kvar,
        "remaining_money_cny": engine.displayed_money,
        "purchase_count": engine.purchase_count,
        TAKE_BACK_COUNT: engine.take_back_count,
        "relay_state": int(engine.relay_open),
        "status_bits": status_bits(engine),
        "alarm_1_cny": settings.alarm_1,
        "alarm_2_cny": settings.alarm_2,
        "overdraft_limit_cny": settings.overdraft_limit,
    }
    for name, price in zip(_PRICE_REGISTERS, settings.prices, strict=True):
        result[name] = price
    result.update(_clock_values(meter, now))
    return result


def _apply_settings(engine: PrepaidEngine, written: dict[str, Decimal | int]) -> None:
    changes = {
        _SETTING_REGISTERS[name]: Decimal(written[name])
        for name in _SETTING_REGISTERS
        if name in written
    }
    if any(name in written for name in _PRICE_REGISTERS):
        prices = tuple(
            Decimal(written[name]) if name in written else old
            for name, old in zip(_PRICE_REGISTERS, engine.settings.prices, strict=True)
        )
        engine.update_settings(prices=(prices[0], prices[1], prices[2], prices[3]))
    if changes:
        engine.update_settings(
            alarm_1=changes.get("alarm_1"),
            alarm_2=changes.get("alarm_2"),
            overdraft_limit=changes.get("overdraft_limit"),
        )


def _apply_clock(meter: ElectricityMeter, written: dict[str, Decimal | int], now: datetime) -> None:
    current = _clock_values(meter, now)
    current.update({name: int(value) for name, value in written.items() if name in current})
    year, month, day, hour, minute, second = (current[f"clock_{name}"] for name in CLOCK_FIELDS)
    shown = datetime(2000 + year, month, day, hour, minute, second, tzinfo=meter.zone)
    meter.clock.set(now, shown)


def apply_writes(meter: ElectricityMeter, written: dict[str, Decimal | int], now: datetime) -> None:
    """Apply decoded register writes; raises ``CommandRefused`` or ``ValueError`` to refuse."""
    engine = meter.engine
    _apply_settings(engine, written)
    if any(name.startswith("clock_") for name in written):
        _apply_clock(meter, written, now)
    if "relay_command" in written:
        engine.command(RelayCommand(int(written["relay_command"])))
    if RECHARGE_AMOUNT in written:
        engine.recharge(Decimal(written[RECHARGE_AMOUNT]), int(written[RECHARGE_COUNT]))
    if TAKE_BACK_AMOUNT in written:
        engine.take_back(Decimal(written[TAKE_BACK_AMOUNT]), int(written[TAKE_BACK_REQUEST_COUNT]))
