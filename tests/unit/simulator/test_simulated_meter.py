"""The virtual meters: energy from power × time per TOU band, rollover, clocks, valves."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from meterdesk.simulator.meter import (
    ElectricityMeter,
    ElectricitySpec,
    MeterClock,
    Valve,
    ValvePosition,
    WaterMeter,
    WaterSpec,
)
from meterdesk.simulator.prepaid import BillingMode, PrepaidSettings, RelayCommand
from meterdesk.simulator.profiles import (
    DAY_SCHEDULE,
    Band,
    LoadProfile,
    band_at,
    hour_segments,
    load_fraction,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
MONDAY = datetime(2026, 11, 2, 0, 0, tzinfo=SHANGHAI)


def electricity(**changes: object) -> ElectricityMeter:
    values: dict[str, object] = {"address": 1, "zone": SHANGHAI, "seed": 3, "money": Decimal(500)}
    values.update(changes)
    return ElectricityMeter(ElectricitySpec(**values), now=MONDAY)  # type: ignore[arg-type]


def test_the_tou_day_covers_every_hour_with_four_bands() -> None:
    assert set(DAY_SCHEDULE) == set(Band)
    assert band_at(MONDAY.replace(hour=3)) is Band.VALLEY
    assert band_at(MONDAY.replace(hour=19)) is Band.SHARP


def test_hour_segments_cut_at_local_full_hours() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")  # +05:30: local hours are not UTC hours
    start = datetime(2026, 1, 1, 10, 20, tzinfo=kolkata)
    cuts = list(hour_segments(start, start + timedelta(hours=2), kolkata))
    assert [end.astimezone(kolkata).minute for _, end in cuts] == [0, 0, 20]
    assert cuts[0][0] == start and cuts[-1][1] == start + timedelta(hours=2)


def test_profiles_are_deterministic_and_shops_use_more_by_day_than_at_night() -> None:
    noon, night = MONDAY.replace(hour=12), MONDAY.replace(hour=3)
    assert load_fraction(LoadProfile.SHOP, noon, "k") == load_fraction(LoadProfile.SHOP, noon, "k")
    assert load_fraction(LoadProfile.SHOP, noon, "k") > load_fraction(LoadProfile.SHOP, night, "k")
    evening = MONDAY.replace(hour=20)
    assert load_fraction(LoadProfile.APARTMENT, evening, "k") > load_fraction(
        LoadProfile.APARTMENT, noon, "k"
    )


def test_offices_use_less_at_weekends() -> None:
    tuesday, saturday = MONDAY.replace(day=3, hour=10), MONDAY.replace(day=7, hour=10)
    assert load_fraction(LoadProfile.OFFICE, saturday, "k") < load_fraction(
        LoadProfile.OFFICE, tuesday, "k"
    )


def test_energy_is_power_times_time_in_the_band_in_force() -> None:
    meter = electricity(profile=LoadProfile.CONSTANT, rated_kw=Decimal(4))
    kw = meter.instantaneous(MONDAY.replace(hour=19, minute=30)).total_active_kw
    meter.advance(MONDAY.replace(hour=19))
    before = meter.energy_registers()
    meter.advance(MONDAY.replace(hour=20))  # one hour of sharp
    after = meter.energy_registers()
    assert after[Band.SHARP] - before[Band.SHARP] == pytest.approx(kw, abs=Decimal("0.02"))
    assert after[Band.VALLEY] == before[Band.VALLEY]


def test_total_is_the_sum_of_the_bands() -> None:
    meter = electricity(band_energy_kwh=(Decimal("1.005"), Decimal(2), Decimal(3), Decimal(4)))
    meter.advance(MONDAY + timedelta(days=3, minutes=17))
    total, *bands = meter.energy_registers()
    assert total == sum(bands)


def test_advancing_to_the_same_or_an_earlier_instant_changes_nothing() -> None:
    meter = electricity()
    meter.advance(MONDAY + timedelta(hours=5))
    registers = meter.energy_registers()
    meter.advance(MONDAY + timedelta(hours=5))
    meter.advance(MONDAY + timedelta(hours=1))
    assert meter.energy_registers() == registers


def test_energy_and_money_stop_while_the_relay_is_open() -> None:
    meter = electricity()
    meter.engine.command(RelayCommand.TRIP)
    money = meter.engine.money
    meter.advance(MONDAY + timedelta(hours=6))
    assert meter.energy_registers()[0] == 0 and meter.engine.money == money
    assert meter.instantaneous(MONDAY + timedelta(hours=6)).total_active_kw == 0


def test_primary_energy_is_charged_through_ct_and_pt() -> None:
    settings = PrepaidSettings(prices=(Decimal(1),) * 4)
    meter = electricity(ct=Decimal(50), money=Decimal(100_000), settings=settings)
    meter.advance(MONDAY + timedelta(hours=10))
    secondary = meter.energy_registers()[0]
    spent = Decimal(100_000) - meter.engine.money
    assert spent == pytest.approx(secondary * 50, abs=Decimal("0.5"))


def test_a_credit_trip_cuts_energy_at_the_crossing_inside_a_segment() -> None:
    settings = PrepaidSettings(prices=(Decimal(1),) * 4, alarm_1=Decimal(0), alarm_2=Decimal(0))
    meter = electricity(money=Decimal("0.30"), settings=settings, profile=LoadProfile.CONSTANT)
    meter.advance(MONDAY + timedelta(days=1))
    assert meter.engine.relay_open
    assert Decimal("-0.01") < meter.engine.money < 0
    assert meter.energy_registers()[0] == Decimal("0.30")


def test_registers_roll_over_at_the_modulus() -> None:
    meter = electricity(modulus=Decimal(10_000), profile=LoadProfile.CONSTANT)
    meter.jump_to_rollover(MONDAY, Decimal("0.50"))
    assert meter.energy_registers()[0] == Decimal("9999.50")
    meter.advance(MONDAY + timedelta(hours=2))
    total, *bands = meter.energy_registers()
    assert total < Decimal(10) and total == sum(bands) % 10_000


def test_previous_settlements_are_frozen_at_the_local_month_start() -> None:
    meter = electricity(billing=BillingMode.PLATFORM)
    assert meter.settlement_registers(1) is None
    month_start = datetime(2026, 12, 1, tzinfo=SHANGHAI)
    meter.advance(month_start)
    at_start = meter.energy_registers()
    meter.advance(month_start + timedelta(days=2))
    assert meter.settlement_registers(1) == at_start != meter.energy_registers()


def test_replacement_restarts_registers_and_counter_and_carries_the_money_over() -> None:
    meter = electricity()
    meter.engine.recharge(Decimal(10), 1)
    meter.engine.command(RelayCommand.TRIP)
    meter.replace(MONDAY + timedelta(hours=3))
    assert meter.energy_registers()[0] == 0 and meter.engine.purchase_count == 0
    assert meter.engine.money == Decimal(510) and not meter.engine.relay_open
    meter.advance(MONDAY + timedelta(hours=6))
    assert meter.energy_registers()[0] > 0


def test_voltage_and_frequency_are_plausible_and_pt_scales_voltage() -> None:
    values = electricity().instantaneous(MONDAY.replace(hour=20))
    assert Decimal(200) < values.voltage_v[0] < Decimal(240)
    assert Decimal("49.9") <= values.frequency_hz <= Decimal("50.1")
    assert Decimal("0.8") < values.power_factor < 1
    assert electricity(pt=Decimal(10)).instantaneous(MONDAY).voltage_v[0] < Decimal(25)


def test_three_phase_meter_has_three_phases() -> None:
    values = electricity(phases=3).instantaneous(MONDAY.replace(hour=20))
    assert len(values.voltage_v) == len(values.current_a) == 3


# --- clock ----------------------------------------------------------------------------------


def test_clock_drift_accumulates_and_a_time_sync_removes_it() -> None:
    clock = MeterClock()
    clock.start_drift(MONDAY, 1000.0)  # 1000 ppm: 86.4 s a day
    later = MONDAY + timedelta(days=1)
    assert clock.read(later) - later == timedelta(seconds=86.4)
    clock.set(later, later)
    assert clock.read(later) == later
    assert clock.read(later + timedelta(days=1)) > later + timedelta(days=1)


# --- water ----------------------------------------------------------------------------------


def water(**changes: object) -> WaterMeter:
    values: dict[str, object] = {"address": 1, "zone": SHANGHAI, "valve_delay_s": 8.0}
    values.update(changes)
    return WaterMeter(WaterSpec(**values), now=MONDAY)  # type: ignore[arg-type]


def test_valve_takes_its_delay_to_close() -> None:
    meter = water()
    meter.command_valve(False, MONDAY)
    assert meter.valve_position(MONDAY + timedelta(seconds=7.9)) is ValvePosition.OPEN
    assert meter.valve_position(MONDAY + timedelta(seconds=8)) is ValvePosition.CLOSED
    meter.command_valve(True, MONDAY + timedelta(seconds=10))
    assert meter.valve_position(MONDAY + timedelta(seconds=17)) is ValvePosition.CLOSED
    assert meter.valve_position(MONDAY + timedelta(seconds=18)) is ValvePosition.OPEN


def test_water_stops_once_the_valve_has_closed() -> None:
    meter = water(profile=LoadProfile.CONSTANT, rated_flow_m3h=Decimal(10))
    meter.command_valve(False, MONDAY.replace(hour=8))
    meter.advance(MONDAY.replace(hour=8, minute=1))
    volume = meter.volume_m3
    assert volume > 0  # flowed until 08:00; the valve finished closing at 08:00:08
    meter.advance(MONDAY.replace(hour=20))
    assert meter.volume_m3 == volume


def test_a_stuck_valve_ends_abnormal() -> None:
    valve = Valve(delay=timedelta(seconds=8), stuck=True)
    valve.command(False, MONDAY)
    valve.settle(MONDAY + timedelta(seconds=8))
    assert valve.position is ValvePosition.ABNORMAL


def test_commanding_the_position_it_already_has_does_not_move_the_valve() -> None:
    valve = Valve()
    valve.command(True, MONDAY)
    assert not valve.moving


def test_water_volume_rolls_over() -> None:
    meter = water(profile=LoadProfile.CONSTANT, modulus=Decimal(1000), rated_flow_m3h=Decimal(2))
    meter.jump_to_rollover(MONDAY, Decimal("0.10"))
    assert meter.volume_m3 == Decimal("999.90")
    meter.advance(MONDAY + timedelta(hours=3))
    assert meter.volume_m3 < 5
