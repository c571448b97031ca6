"""Invariants of pricing and definitions, checked on generated tariffs and readings."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from itertools import pairwise
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from meterdesk.shared.money import EXACT
from meterdesk.tariffs.definition import tariff_from_dict, tariff_to_dict
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
from meterdesk.tariffs.pricing import PricedLine, Usage, apportion, band_segments, price_usage

# Havana springs forward at midnight and falls back into a repeated midnight hour; Lord Howe
# shifts by 30 minutes: both are harsher than any site we expect.
ZONES = [
    ZoneInfo(name)
    for name in (
        "Asia/Shanghai",
        "America/New_York",
        "Europe/London",
        "Australia/Lord_Howe",
        "America/Havana",
    )
]
SHANGHAI = ZONES[0]
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
PROPERTY = settings(max_examples=150, deadline=None)

amounts = st.integers(0, 10**12).map(lambda units: Decimal(units).scaleb(-6))
prices = st.integers(0, 5 * 10**6).map(lambda units: Decimal(units).scaleb(-6))


@st.composite
def schedules(draw: st.DrawFn) -> DaySchedule:
    minutes = draw(st.lists(st.integers(1, 24 * 60 - 1), max_size=13, unique=True))
    starts = [0, *sorted(minutes)]
    return DaySchedule(
        tuple(
            Period(time(minute // 60, minute % 60), draw(st.sampled_from(BAND_ORDER)))
            for minute in starts
        )
    )


@st.composite
def season_sets(draw: st.DrawFn) -> tuple[Season, ...]:
    groups = draw(st.lists(st.integers(0, 2), min_size=12, max_size=12))
    seasons = []
    for group in sorted(set(groups)):
        months = frozenset(month for month, g in enumerate(groups, 1) if g == group)
        optional = st.none() | schedules()
        seasons.append(
            Season(f"s{group}", months, draw(schedules()), draw(optional), draw(optional))
        )
    return tuple(seasons)


@st.composite
def tier_plans(draw: st.DrawFn, mode: TierMode) -> TierPlan:
    bounds = sorted(draw(st.sets(st.integers(1, 10**9), max_size=4)))
    ups: list[Decimal | None] = [Decimal(bound).scaleb(-3) for bound in bounds]
    blocks = tuple(TierBlock(up_to, draw(prices)) for up_to in [*ups, None])
    return TierPlan(draw(st.sampled_from(TierPeriod)), mode, blocks)


@st.composite
def calendars(draw: st.DrawFn) -> tuple[frozenset[date], frozenset[date]]:
    days = st.integers(0, 729).map(lambda n: date(2026, 1, 1) + timedelta(days=n))
    holidays = draw(st.frozensets(days, max_size=6))
    weekends = days.filter(lambda day: day.weekday() >= 5 and day not in holidays)
    return holidays, draw(st.frozensets(weekends, max_size=4))


@st.composite
def versions(draw: st.DrawFn, effective_from: date, utility: Utility) -> TariffVersion:
    seasons = () if utility is Utility.WATER else draw(st.just(()) | season_sets())
    modes = [TierMode.ADDER] if seasons else [TierMode.ADDER, TierMode.PRICE]
    tiers = draw(st.none() | st.sampled_from(modes).flatmap(tier_plans))
    used = {
        p.band for s in seasons for d in (s.workday, s.weekend, s.holiday) if d for p in d.periods
    } or {Band.FLAT}
    if tiers is not None and tiers.mode is TierMode.PRICE:
        used = set()
    extra = draw(st.sets(st.sampled_from(BAND_ORDER)))
    band_prices = {band: draw(prices) for band in BAND_ORDER if band in used | extra}
    holidays, workdays = draw(calendars())
    return TariffVersion(effective_from, band_prices, seasons, holidays, workdays, tiers)


@st.composite
def tariffs(draw: st.DrawFn) -> Tariff:
    utility = draw(st.sampled_from(Utility))
    later = draw(st.sets(st.integers(1, 400), max_size=2))
    days = [date(2025, 12, 1)] + [date(2026, 1, 1) + timedelta(days=n) for n in sorted(later)]
    return Tariff(utility, tuple(draw(versions(day, utility)) for day in days))


@st.composite
def windows(draw: st.DrawFn) -> tuple[datetime, datetime]:
    start = EPOCH + timedelta(microseconds=draw(st.integers(0, 366 * 86400 * 10**6)))
    length = draw(st.integers(1, 3 * 86400 * 10**6) | st.integers(1, 3600 * 10**6))
    return start, start + timedelta(microseconds=length)


registers = st.none() | st.dictionaries(st.sampled_from(BAND_ORDER), amounts, max_size=5)


def _check_lines(lines: list[PricedLine], start: datetime, end: datetime) -> None:
    for line in lines:
        assert line.quantity > 0
        assert line.cost == EXACT.multiply(line.quantity, line.unit_price)
        assert start <= line.start < line.end <= end
    assert [line.start for line in lines] == sorted(line.start for line in lines)


@PROPERTY
@given(tariffs(), windows(), amounts, registers, st.sampled_from(ZONES), amounts)
def test_lines_account_for_every_unit_exactly(
    tariff: Tariff,
    window: tuple[datetime, datetime],
    total: Decimal,
    by_band: dict[Band, Decimal] | None,
    tz: ZoneInfo,
    used: Decimal,
) -> None:
    start, end = window
    reading = Usage(start, end, total, by_band)
    month = start.astimezone(tz)
    lines = price_usage(reading, tariff, tz, {f"{month:%Y-%m}": used, f"{month:%Y}": used})
    expected = total if by_band is None else sum(by_band.values(), Decimal(0))
    assert sum((line.quantity for line in lines), Decimal(0)) == expected
    _check_lines(lines, start, end)


@PROPERTY
@given(tariffs(), windows(), st.sampled_from(ZONES))
def test_segments_tile_the_window_without_gaps(
    tariff: Tariff, window: tuple[datetime, datetime], tz: ZoneInfo
) -> None:
    start, end = window
    segments = band_segments(start, end, tariff, tz)
    assert segments[0].start == start
    assert segments[-1].end == end
    for before, after in pairwise(segments):
        assert before.end == after.start
    assert all(segment.start < segment.end for segment in segments)


@PROPERTY
@given(tariffs(), windows())
def test_segment_bands_match_the_schedule_at_both_ends_in_shanghai(
    tariff: Tariff, window: tuple[datetime, datetime]
) -> None:
    for segment in band_segments(*window, tariff, SHANGHAI):
        for instant in (segment.start, segment.end - timedelta(microseconds=1)):
            assert segment.band is _reference_band(segment.version, instant.astimezone(SHANGHAI))


def _reference_band(version: TariffVersion, local: datetime) -> Band:
    season = version.season_for(local.month)
    if season is None:
        return Band.FLAT
    day = local.date()
    if day in version.holidays:
        schedule = season.holiday or season.weekend or season.workday
    elif day.weekday() >= 5 and day not in version.workdays:
        schedule = season.weekend or season.workday
    else:
        schedule = season.workday
    return schedule.band_at(local.time())


SHARP_TARIFF = tariff_from_dict(
    {
        "utility": "electricity",
        "versions": [
            {
                "effective_from": "2026-01-01",
                "prices": {"sharp": "1.3", "flat": "0.68", "valley": "0.32"},
                "seasons": [
                    {
                        "name": "all",
                        "months": list(range(1, 13)),
                        "workday": [["00:00", "valley"], ["11:00", "sharp"], ["13:00", "flat"]],
                    }
                ],
                "tiers": {
                    "period": "month",
                    "mode": "adder",
                    "blocks": [
                        {"up_to": "0.5", "price": "0"},
                        {"up_to": "1", "price": "0.1"},
                        {"up_to": None, "price": "0.3"},
                    ],
                },
            }
        ],
    }
)


@PROPERTY
@given(
    st.lists(st.integers(0, 2 * 3600 * 10**6), min_size=3, max_size=3, unique=True),
    st.integers(0, 2 * 10**6).map(lambda units: Decimal(units).scaleb(-6)),
    st.integers(0, 2 * 10**6).map(lambda units: Decimal(units).scaleb(-6)),
)
def test_pricing_a_window_in_one_band_equals_pricing_its_two_halves(
    offsets: list[int], total: Decimal, used: Decimal
) -> None:
    # Wednesday 2026-07-15, sharp 11:00-13:00 local.
    a, b, c = (
        datetime(2026, 7, 15, 3, tzinfo=UTC) + timedelta(microseconds=o) for o in sorted(offsets)
    )
    first, second = apportion(
        total, [(b - a) // timedelta(microseconds=1), (c - b) // timedelta(microseconds=1)]
    )
    whole = price_usage(Usage(a, c, total), SHARP_TARIFF, SHANGHAI, {"2026-07": used})
    left = price_usage(Usage(a, b, first), SHARP_TARIFF, SHANGHAI, {"2026-07": used})
    after = used + sum((line.quantity for line in left), Decimal(0))
    right = price_usage(Usage(b, c, second), SHARP_TARIFF, SHANGHAI, {"2026-07": after})
    assert _per_block(whole) == _per_block(left + right)


def _per_block(lines: list[PricedLine]) -> dict[int | None, tuple[Decimal, Decimal]]:
    result: dict[int | None, tuple[Decimal, Decimal]] = {}
    for line in lines:
        quantity, cost = result.get(line.tier_block, (Decimal(0), Decimal(0)))
        result[line.tier_block] = (quantity + line.quantity, cost + line.cost)
    return result


@PROPERTY
@given(tariffs())
def test_definitions_round_trip_through_json(tariff: Tariff) -> None:
    written = tariff_to_dict(tariff)
    assert tariff_from_dict(json.loads(json.dumps(written))) == tariff
    assert tariff_to_dict(tariff_from_dict(written)) == written


@PROPERTY
@given(amounts, st.lists(st.integers(1, 10**12), min_size=1, max_size=8))
def test_apportioned_parts_sum_to_the_whole_and_follow_the_weights(
    quantity: Decimal, weights: list[int]
) -> None:
    parts = apportion(quantity, weights)
    assert sum(parts, Decimal(0)) == quantity
    whole = sum(weights)
    for part, weight in zip(parts, weights, strict=True):
        assert abs(part - quantity * weight / whole) < Decimal("0.000001")
