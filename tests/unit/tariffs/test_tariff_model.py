"""The tariff model refuses invalid values however it is built, and behaves as a value."""

from __future__ import annotations

import dataclasses
from datetime import date, time
from decimal import Decimal

import pytest

from meterdesk.shared.errors import ValidationError
from meterdesk.tariffs.model import (
    BAND_ORDER,
    Band,
    DaySchedule,
    Period,
    Season,
    Tariff,
    TariffVersion,
    TierBlock,
    TierMode,
    TierPeriod,
    TierPlan,
    Utility,
)

ALL_YEAR = frozenset(range(1, 13))


def schedule(*periods: tuple[int, Band]) -> DaySchedule:
    return DaySchedule(tuple(Period(time(hour), band) for hour, band in periods))


def test_band_order_is_sharp_peak_flat_valley_deep_valley() -> None:
    assert [band.value for band in BAND_ORDER] == ["sharp", "peak", "flat", "valley", "deep_valley"]


def test_band_at_is_the_last_period_started() -> None:
    day = schedule((0, Band.VALLEY), (8, Band.FLAT), (22, Band.VALLEY))
    assert day.band_at(time(7, 59)) is Band.VALLEY
    assert day.band_at(time(8)) is Band.FLAT
    assert day.band_at(time(23, 59)) is Band.VALLEY


def test_a_schedule_with_a_period_off_the_whole_minute_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"periods\[1\]: .*whole minute"):
        DaySchedule((Period(time(0), Band.FLAT), Period(time(8, 0, 30), Band.PEAK)))


def test_constructing_a_version_directly_is_validated_too() -> None:
    rest = Season("rest", frozenset(range(1, 12)), schedule((0, Band.FLAT)))
    with pytest.raises(ValidationError, match=r"seasons: months \[12\] are in no season"):
        TariffVersion(date(2026, 1, 1), {Band.FLAT: Decimal(1)}, (rest,))
    with pytest.raises(ValidationError, match=r"prices\.flat: a price cannot be negative"):
        TariffVersion(date(2026, 1, 1), {Band.FLAT: Decimal(-1)})


def test_prices_are_copied_and_read_only() -> None:
    given = {Band.FLAT: Decimal("0.5")}
    version = TariffVersion(date(2026, 1, 1), given)
    given[Band.FLAT] = Decimal(9)
    assert version.prices[Band.FLAT] == Decimal("0.5")
    assert version.prices == {Band.FLAT: Decimal("0.5")}
    with pytest.raises(TypeError):
        version.prices[Band.FLAT] = Decimal(1)  # type: ignore[index]


def test_versions_are_hashable_values() -> None:
    one = TariffVersion(date(2026, 1, 1), {Band.FLAT: Decimal("0.5")})
    two = TariffVersion(date(2026, 1, 1), {Band.FLAT: Decimal("0.50")})
    assert one == two
    assert hash(one) == hash(two)
    assert hash(Tariff(Utility.WATER, (one,))) == hash(Tariff(Utility.WATER, (two,)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.effective_from = date(2027, 1, 1)  # type: ignore[misc]


def test_replace_recomputes_the_hash() -> None:
    one = TariffVersion(date(2026, 1, 1), {Band.FLAT: Decimal("0.5")})
    moved = dataclasses.replace(one, effective_from=date(2026, 2, 1))
    assert hash(moved) == hash(TariffVersion(date(2026, 2, 1), {Band.FLAT: Decimal("0.5")}))


def test_a_time_of_use_tariff_with_price_mode_tiers_is_refused() -> None:
    season = Season("all", ALL_YEAR, schedule((0, Band.FLAT)))
    tiers = TierPlan(TierPeriod.MONTH, TierMode.PRICE, (TierBlock(None, Decimal(1)),))
    with pytest.raises(ValidationError, match=r"tiers\.mode: .* uses 'adder'"):
        TariffVersion(date(2026, 1, 1), {Band.FLAT: Decimal(1)}, (season,), tiers=tiers)


def test_season_lookup_by_month() -> None:
    summer = Season("summer", frozenset({7, 8}), schedule((0, Band.PEAK)))
    rest = Season("rest", ALL_YEAR - {7, 8}, schedule((0, Band.FLAT)))
    version = TariffVersion(
        date(2026, 1, 1), {Band.PEAK: Decimal(1), Band.FLAT: Decimal(1)}, (summer, rest)
    )
    assert version.season_for(7) is summer
    assert version.season_for(1) is rest
    assert TariffVersion(date(2026, 1, 1), {Band.FLAT: Decimal(1)}).season_for(7) is None
