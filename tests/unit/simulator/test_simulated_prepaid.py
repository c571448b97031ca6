"""The simulated meter's relay state machine and prepaid engine (pure)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meterdesk.simulator.prepaid import (
    BillingMode,
    CommandRefused,
    PrepaidEngine,
    RelayCommand,
)
from meterdesk.simulator.profiles import Band


def engine(
    money: str = "100.00",
    *,
    overdraft_limit: Decimal | None = None,
    hoarding_limit: Decimal | None = None,
    close_allowed_amount: Decimal | None = None,
) -> PrepaidEngine:
    result = PrepaidEngine(money=Decimal(money))
    result.update_settings(
        overdraft_limit=overdraft_limit,
        hoarding_limit=hoarding_limit,
        close_allowed_amount=close_allowed_amount,
    )
    return result


# --- relay ----------------------------------------------------------------------------------


def test_trip_opens_the_relay_and_marks_it_commanded() -> None:
    meter = engine()
    meter.command(RelayCommand.TRIP)
    assert meter.relay_open and meter.commanded_open


def test_direct_close_restores_supply() -> None:
    meter = engine()
    meter.command(RelayCommand.TRIP)
    meter.command(RelayCommand.CLOSE)
    assert not meter.relay_open and not meter.commanded_open


def test_close_allowed_waits_for_the_button_when_money_is_not_above_the_close_amount() -> None:
    meter = engine("5.00", close_allowed_amount=Decimal("10.00"))
    meter.command(RelayCommand.TRIP)
    meter.command(RelayCommand.CLOSE_ALLOWED)
    assert meter.relay_open and meter.awaiting_button
    meter.press_button()
    assert not meter.relay_open and not meter.awaiting_button


def test_close_allowed_closes_at_once_when_money_is_above_the_close_amount() -> None:
    meter = engine("50.00", close_allowed_amount=Decimal("10.00"))
    meter.command(RelayCommand.TRIP)
    meter.command(RelayCommand.CLOSE_ALLOWED)
    assert not meter.relay_open


def test_a_recharge_above_the_close_amount_closes_a_meter_waiting_for_the_button() -> None:
    meter = engine("5.00", close_allowed_amount=Decimal("10.00"))
    meter.command(RelayCommand.TRIP)
    meter.command(RelayCommand.CLOSE_ALLOWED)
    meter.recharge(Decimal("20.00"), 1)
    assert not meter.relay_open


def test_pressing_the_button_without_close_allowed_does_nothing() -> None:
    meter = engine()
    meter.command(RelayCommand.TRIP)
    meter.press_button()
    assert meter.relay_open


def test_protected_meter_refuses_a_trip_and_stays_closed() -> None:
    meter = engine()
    meter.command(RelayCommand.PROTECT_ON)
    with pytest.raises(CommandRefused):
        meter.command(RelayCommand.TRIP)
    assert not meter.relay_open and meter.protected


def test_protect_on_closes_a_tripped_relay_and_protect_off_does_not_reopen_it() -> None:
    meter = engine()
    meter.command(RelayCommand.TRIP)
    meter.command(RelayCommand.PROTECT_ON)
    assert not meter.relay_open
    meter.command(RelayCommand.PROTECT_OFF)
    assert not meter.relay_open and not meter.protected


def test_protected_meter_never_trips_for_credit_but_keeps_counting_debt() -> None:
    meter = engine("1.00")
    meter.command(RelayCommand.PROTECT_ON)
    meter.charge(Decimal(10), Band.PEAK)
    assert not meter.relay_open and meter.money == Decimal("-9.0000")
    meter.command(RelayCommand.PROTECT_OFF)
    assert meter.relay_open and meter.credit_tripped


def test_remote_alarm_sets_the_pre_trip_alarm() -> None:
    meter = engine()
    meter.command(RelayCommand.ALARM_ON)
    assert meter.pre_trip_alarm
    meter.command(RelayCommand.ALARM_OFF)
    assert not meter.pre_trip_alarm


# --- prepaid engine -------------------------------------------------------------------------


def test_charge_deducts_energy_times_the_price_of_the_band() -> None:
    meter = engine("100.00")
    meter.charge(Decimal("2.5"), Band.VALLEY)  # 0.4000 CNY/kWh
    meter.charge(Decimal("1"), Band.SHARP)  # 1.2000 CNY/kWh
    assert meter.money == Decimal("97.8000")
    assert meter.displayed_money == Decimal("97.80")


def test_meter_trips_itself_below_the_overdraft_limit_not_at_it() -> None:
    meter = engine("1.00", overdraft_limit=Decimal("5.00"))
    meter.charge(Decimal(6), Band.PEAK)  # money -5.00: at the limit
    assert not meter.relay_open
    meter.charge(Decimal("0.01"), Band.PEAK)
    assert meter.relay_open and meter.credit_tripped and not meter.commanded_open


def test_credit_trip_ends_only_when_money_rises_above_the_close_amount() -> None:
    meter = engine("0.50", close_allowed_amount=Decimal("10.00"))
    meter.charge(Decimal(1), Band.PEAK)
    assert meter.relay_open
    meter.recharge(Decimal("5.00"), 1)  # money 4.50: above zero, not above 10
    assert meter.relay_open
    meter.recharge(Decimal("6.00"), 2)  # 10.50
    assert not meter.relay_open


def test_direct_close_does_not_override_a_credit_trip() -> None:
    meter = engine("0.50")
    meter.charge(Decimal(1), Band.PEAK)
    meter.command(RelayCommand.CLOSE)
    assert meter.relay_open


def test_a_recharge_repays_overdraft_first() -> None:
    meter = engine("0.00", overdraft_limit=Decimal("20.00"))
    meter.charge(Decimal(10), Band.PEAK)
    meter.recharge(Decimal("30.00"), 1)
    assert meter.money == Decimal("20.0000")


def test_recharge_is_accepted_only_with_the_next_purchase_count() -> None:
    meter = engine("10.00")
    meter.recharge(Decimal("10.00"), 1)
    for replay_or_gap in (1, 0, 3):
        with pytest.raises(CommandRefused):
            meter.recharge(Decimal("10.00"), replay_or_gap)
    assert meter.purchase_count == 1 and meter.money == Decimal("20.00")
    meter.recharge(Decimal("10.00"), 2)
    assert meter.purchase_count == 2


def test_purchase_count_wraps_like_its_uint16_register() -> None:
    meter = PrepaidEngine(money=Decimal(0), purchase_count=65535)
    meter.recharge(Decimal("1.00"), 0)
    assert meter.purchase_count == 0


def test_hoarding_limit_refuses_a_recharge_and_changes_nothing() -> None:
    meter = engine("90.00", hoarding_limit=Decimal("100.00"))
    with pytest.raises(CommandRefused):
        meter.recharge(Decimal("20.00"), 1)
    assert meter.money == Decimal("90.00") and meter.purchase_count == 0


def test_alarm_1_must_not_be_below_alarm_2() -> None:
    meter = engine()
    with pytest.raises(CommandRefused):
        meter.update_settings(alarm_1=Decimal("5.00"))
    assert meter.settings.alarm_1 == Decimal("20.00")


def test_platform_billing_meter_never_deducts_or_trips_for_credit() -> None:
    meter = PrepaidEngine(billing=BillingMode.PLATFORM, money=Decimal(0))
    meter.charge(Decimal(100), Band.PEAK)
    assert meter.money == 0 and not meter.relay_open and not meter.below_alarm_2


def test_set_price_changes_one_tariff() -> None:
    meter = engine()
    meter.set_price(Band.FLAT, Decimal("0.8123"))
    assert meter.settings.prices[2] == Decimal("0.8123")
    assert meter.settings.prices[0] == Decimal("1.2000")


def test_take_back_needs_the_next_take_back_count_and_money_the_meter_holds() -> None:
    meter = engine("50.00")
    meter.recharge(Decimal("10.00"), 1)  # 60.00, purchase 1
    meter.take_back(Decimal("25.00"), 1)
    assert (meter.money, meter.take_back_count, meter.purchase_count) == (
        Decimal("35.00"),
        1,
        1,  # a counter of its own: purchases untouched
    )
    for refused in ((Decimal("1.00"), 1), (Decimal("1.00"), 3), (Decimal("35.01"), 2)):
        with pytest.raises(CommandRefused):  # a replay, a gap, more than the meter holds
            meter.take_back(*refused)
    assert (meter.money, meter.take_back_count) == (Decimal("35.00"), 1)
    meter.take_back(Decimal("35.00"), 2)
    assert (meter.money, meter.take_back_count) == (Decimal("0.00"), 2)


def test_taking_everything_back_trips_a_meter_that_bills_itself_below_its_overdraft() -> None:
    meter = engine("5.00", overdraft_limit=Decimal("0.00"))
    meter.take_back(Decimal("5.00"), 1)
    assert not meter.relay_open  # at zero: not below the (zero) overdraft limit
    with pytest.raises(CommandRefused):
        meter.take_back(Decimal("0.01"), 2)
