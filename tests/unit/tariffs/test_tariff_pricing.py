"""Known-answer tests for pricing; every figure is worked out by hand in the comments.

Unless a test says otherwise the site is in Asia/Shanghai (UTC+8, no DST) and the tariff is the
product example: summer (Jul-Sep) workdays valley 00-08, flat 08-10, peak 10-11, sharp 11-13,
peak 13-15, flat 15-23, valley 23-24; the rest of the year valley 00-08, flat 08-22, valley
22-24 on workdays and valley all day at weekends. Prices: sharp 1.3, peak 1.05, flat 0.68,
valley 0.32.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from meterdesk.shared.errors import ValidationError
from meterdesk.shared.time import local_midnight
from meterdesk.tariffs.definition import tariff_from_dict, tariff_to_dict
from meterdesk.tariffs.model import Band, Tariff
from meterdesk.tariffs.pricing import PricedLine, Usage, band_segments, price_usage

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
D = Decimal
ALL_MONTHS = list(range(1, 13))
PRICES = {"sharp": "1.3", "peak": "1.05", "flat": "0.68", "valley": "0.32"}
SUMMER = [["00:00", "valley"], ["08:00", "flat"], ["10:00", "peak"], ["11:00", "sharp"],
          ["13:00", "peak"], ["15:00", "flat"], ["23:00", "valley"]]  # fmt: skip
REST = [["00:00", "valley"], ["08:00", "flat"], ["22:00", "valley"]]
ADDER_TIERS = {
    "period": "month",
    "mode": "adder",
    "blocks": [
        {"up_to": "200", "price": "0"},
        {"up_to": "400", "price": "0.05"},
        {"up_to": None, "price": "0.30"},
    ],
}


def example_tariff(**extra: Any) -> Tariff:
    version = {
        "effective_from": "2026-01-01",
        "prices": PRICES,
        "seasons": [
            {"name": "summer", "months": [7, 8, 9], "workday": SUMMER},
            {
                "name": "rest",
                "months": [1, 2, 3, 4, 5, 6, 10, 11, 12],
                "workday": REST,
                "weekend": [["00:00", "valley"]],
            },
        ],
        "holidays": ["2026-10-01"],
        "workdays": ["2026-10-10"],
    }
    version.update(extra)
    return tariff_from_dict({"utility": "electricity", "versions": [version]})


def flat_tariff(*versions: tuple[str, str], tiers: dict[str, Any] | None = None) -> Tariff:
    return tariff_from_dict(
        {
            "utility": "electricity",
            "versions": [
                {"effective_from": day, "prices": {"flat": price}, "tiers": tiers}
                for day, price in versions
            ],
        }
    )


def at(text: str, tz: ZoneInfo = SHANGHAI) -> datetime:
    """A local wall time ``YYYY-MM-DD HH:MM`` in ``tz`` as a UTC instant."""
    return datetime.fromisoformat(text).replace(tzinfo=tz).astimezone(UTC)


def usage(start: str, end: str, total: str, tz: ZoneInfo = SHANGHAI, **by_band: str) -> Usage:
    registers = {Band(band): D(value) for band, value in by_band.items()} or None
    return Usage(at(start, tz), at(end, tz), D(total), registers)


def summary(lines: list[PricedLine]) -> list[tuple[Band, Decimal, Decimal, Decimal, int | None]]:
    return [(ln.band, ln.quantity, ln.unit_price, ln.cost, ln.tier_block) for ln in lines]


def test_interval_crossing_a_tou_boundary_is_spread_by_time() -> None:
    # Monday 07:45-08:15: 15 min valley, 15 min flat; 1 kWh → 0.5 each.
    # 0.5 × 0.32 = 0.16 and 0.5 × 0.68 = 0.34.
    lines = price_usage(
        usage("2026-03-02 07:45", "2026-03-02 08:15", "1"), example_tariff(), SHANGHAI, {}
    )
    assert summary(lines) == [
        (Band.VALLEY, D("0.5"), D("0.32"), D("0.16"), None),
        (Band.FLAT, D("0.5"), D("0.68"), D("0.34"), None),
    ]
    assert [(ln.start, ln.end) for ln in lines] == [
        (at("2026-03-02 07:45"), at("2026-03-02 08:00")),
        (at("2026-03-02 08:00"), at("2026-03-02 08:15")),
    ]
    assert {(ln.tier_key, ln.period_key, ln.version_from) for ln in lines} == {
        (None, "2026-03", date(2026, 1, 1))
    }


def test_spreading_uses_largest_remainder_so_parts_sum_exactly() -> None:
    # 07:50-08:20: 10 min valley, 20 min flat; 0.1 kWh = 100000 µkWh.
    # valley 100000/3 = 33333 r 1/3, flat 200000/3 = 66666 r 2/3; the spare unit goes to the
    # larger remainder: 0.033333 + 0.066667 = 0.1.
    # 0.033333 × 0.32 = 0.01066656; 0.066667 × 0.68 = 0.04533356.
    lines = price_usage(
        usage("2026-03-02 07:50", "2026-03-02 08:20", "0.1"), example_tariff(), SHANGHAI, {}
    )
    assert summary(lines) == [
        (Band.VALLEY, D("0.033333"), D("0.32"), D("0.01066656"), None),
        (Band.FLAT, D("0.066667"), D("0.68"), D("0.04533356"), None),
    ]


def test_equal_remainders_go_to_the_earlier_segment_and_zero_parts_make_no_line() -> None:
    # 1 µkWh over two equal halves: both remainders are equal, the earlier (valley) gets it.
    lines = price_usage(
        usage("2026-03-02 07:45", "2026-03-02 08:15", "0.000001"), example_tariff(), SHANGHAI, {}
    )
    assert summary(lines) == [(Band.VALLEY, D("0.000001"), D("0.32"), D("0.00000032"), None)]


def test_band_registers_are_billed_on_the_segments_showing_their_band() -> None:
    # Registers say valley 0.4, flat 0.7 over 07:45-08:15: each goes to its own segment.
    # 0.4 × 0.32 = 0.128; 0.7 × 0.68 = 0.476.
    reading = usage("2026-03-02 07:45", "2026-03-02 08:15", "1.1", valley="0.4", flat="0.7")
    lines = price_usage(reading, example_tariff(), SHANGHAI, {})
    assert summary(lines) == [
        (Band.VALLEY, D("0.4"), D("0.32"), D("0.128"), None),
        (Band.FLAT, D("0.7"), D("0.68"), D("0.476"), None),
    ]
    assert lines[0].end == lines[1].start == at("2026-03-02 08:00")


def test_register_band_absent_from_the_schedule_is_spread_over_all_segments() -> None:
    # The meter's clock says peak, the tariff shows valley then flat: 0.2 peak is spread by
    # time (0.1 + 0.1), keeps its band and is priced at the peak price: 0.1 × 1.05 = 0.105.
    reading = usage("2026-03-02 07:45", "2026-03-02 08:15", "0.2", peak="0.2", flat="0")
    lines = price_usage(reading, example_tariff(), SHANGHAI, {})
    assert summary(lines) == [
        (Band.PEAK, D("0.1"), D("1.05"), D("0.105"), None),
        (Band.PEAK, D("0.1"), D("1.05"), D("0.105"), None),
    ]


def test_flat_tariff_prices_every_register_band_at_the_flat_price() -> None:
    # One segment; pieces in band order (peak before valley), both at 0.6:
    # 0.3 × 0.6 = 0.18; 0.2 × 0.6 = 0.12.
    reading = usage("2026-03-02 10:00", "2026-03-02 10:15", "0.5", valley="0.2", peak="0.3")
    lines = price_usage(reading, flat_tariff(("2026-01-01", "0.6")), SHANGHAI, {})
    assert summary(lines) == [
        (Band.PEAK, D("0.3"), D("0.6"), D("0.18"), None),
        (Band.VALLEY, D("0.2"), D("0.6"), D("0.12"), None),
    ]


def test_adder_tiers_split_a_reading_crossing_block_bounds() -> None:
    # Flat band (0.68) at 10:00; 190 kWh already used in March; 250 kWh more:
    # 10 in block 0 at 0.68 + 0 = 6.8; 200 in block 1 at 0.73 = 146; 40 in block 2 at 0.98
    # = 39.2.
    lines = price_usage(
        usage("2026-03-02 10:00", "2026-03-02 10:15", "250"),
        example_tariff(tiers=ADDER_TIERS),
        SHANGHAI,
        {"2026-03": D("190")},
    )
    assert summary(lines) == [
        (Band.FLAT, D("10"), D("0.68"), D("6.8"), 0),
        (Band.FLAT, D("200"), D("0.73"), D("146"), 1),
        (Band.FLAT, D("40"), D("0.98"), D("39.2"), 2),
    ]
    assert {ln.tier_key for ln in lines} == {"2026-03"}


def test_tiers_climb_in_time_order_across_tou_segments() -> None:
    # 07:45-08:15 with 20 kWh and 195 used: valley 10 first (5 in block 0 at 0.32, 5 in block 1
    # at 0.37), then flat 10 entirely in block 1 at 0.73.
    lines = price_usage(
        usage("2026-03-02 07:45", "2026-03-02 08:15", "20"),
        example_tariff(tiers=ADDER_TIERS),
        SHANGHAI,
        {"2026-03": D("195")},
    )
    assert summary(lines) == [
        (Band.VALLEY, D("5"), D("0.32"), D("1.6"), 0),
        (Band.VALLEY, D("5"), D("0.37"), D("1.85"), 1),
        (Band.FLAT, D("10"), D("0.73"), D("7.3"), 1),
    ]


def test_price_mode_tiers_use_the_block_price_as_unit_price() -> None:
    # Water, yearly blocks 0-180 m³ at 3.5, 180-260 at 4.2, above at 5.6; 178 used in 2026;
    # 5 m³ more: 2 × 3.5 = 7 and 3 × 4.2 = 12.6.
    water = tariff_from_dict(
        {
            "utility": "water",
            "versions": [
                {
                    "effective_from": "2026-01-01",
                    "prices": {},
                    "tiers": {
                        "period": "year",
                        "mode": "price",
                        "blocks": [
                            {"up_to": 180, "price": "3.5"},
                            {"up_to": 260, "price": "4.2"},
                            {"up_to": None, "price": "5.6"},
                        ],
                    },
                }
            ],
        }
    )
    lines = price_usage(
        usage("2026-03-02 10:00", "2026-03-02 11:00", "5"), water, SHANGHAI, {"2026": D("178")}
    )
    assert summary(lines) == [
        (Band.FLAT, D("2"), D("3.5"), D("7"), 0),
        (Band.FLAT, D("3"), D("4.2"), D("12.6"), 1),
    ]
    assert [ln.tier_key for ln in lines] == ["2026", "2026"]


def test_usage_exactly_at_a_block_bound_starts_in_the_next_block() -> None:
    lines = price_usage(
        usage("2026-03-02 10:00", "2026-03-02 10:15", "1"),
        example_tariff(tiers=ADDER_TIERS),
        SHANGHAI,
        {"2026-03": D("200")},
    )
    assert summary(lines) == [(Band.FLAT, D("1"), D("0.73"), D("0.73"), 1)]


def test_version_change_mid_interval_prices_each_side_under_its_version() -> None:
    # New price 0.6 from 2026-03-15 (local midnight = 2026-03-14 16:00 UTC); 23:50-00:10 local
    # with 2 kWh: 1 × 0.5 = 0.5 under the old version, 1 × 0.6 = 0.6 under the new one.
    tariff = flat_tariff(("2026-01-01", "0.5"), ("2026-03-15", "0.6"))
    lines = price_usage(usage("2026-03-14 23:50", "2026-03-15 00:10", "2"), tariff, SHANGHAI, {})
    assert summary(lines) == [
        (Band.FLAT, D("1"), D("0.5"), D("0.5"), None),
        (Band.FLAT, D("1"), D("0.6"), D("0.6"), None),
    ]
    assert [ln.version_from for ln in lines] == [date(2026, 1, 1), date(2026, 3, 15)]
    assert lines[1].start == datetime(2026, 3, 14, 16, tzinfo=UTC)


def test_flat_tariff_is_not_split_at_an_ordinary_midnight() -> None:
    lines = price_usage(
        usage("2026-03-14 23:50", "2026-03-15 00:10", "2"),
        flat_tariff(("2026-01-01", "0.5")),
        SHANGHAI,
        {},
    )
    assert summary(lines) == [(Band.FLAT, D("2"), D("0.5"), D("1"), None)]


@pytest.mark.parametrize(
    ("start", "band", "price"),
    [
        ("2026-07-15 11:00", Band.SHARP, "1.3"),  # summer Wednesday: sharp 11-13
        ("2026-03-04 11:00", Band.FLAT, "0.68"),  # rest-of-year Wednesday: flat 08-22
        ("2026-03-07 11:00", Band.VALLEY, "0.32"),  # rest-of-year Saturday: weekend schedule
        ("2026-07-18 11:00", Band.SHARP, "1.3"),  # summer Saturday: no weekend → workday
        ("2026-10-01 11:00", Band.VALLEY, "0.32"),  # National Day (Thursday): holiday → weekend
        ("2026-10-10 11:00", Band.FLAT, "0.68"),  # Saturday worked (调休): workday schedule
        ("2026-10-17 11:00", Band.VALLEY, "0.32"),  # an ordinary Saturday
    ],
)
def test_season_and_day_kind_choose_the_schedule(start: str, band: Band, price: str) -> None:
    begin = at(start)
    reading = Usage(begin, begin + timedelta(minutes=15), D("2"))
    lines = price_usage(reading, example_tariff(), SHANGHAI, {})
    assert summary(lines) == [(band, D("2"), D(price), D("2") * D(price), None)]


def test_billing_month_boundary_splits_with_its_own_tier_keys() -> None:
    # Flat 0.5 with the adder ladder; 23:45-00:15 across 31 March → 1 April, 1 kWh: 0.5 in March
    # (199.9 used: 0.1 in block 0 at 0.5, 0.4 in block 1 at 0.55), 0.5 in April (fresh: block 0).
    tariff = flat_tariff(("2026-01-01", "0.5"), tiers=ADDER_TIERS)
    lines = price_usage(
        usage("2026-03-31 23:45", "2026-04-01 00:15", "1"),
        tariff,
        SHANGHAI,
        {"2026-03": D("199.9")},
    )
    assert summary(lines) == [
        (Band.FLAT, D("0.1"), D("0.5"), D("0.05"), 0),
        (Band.FLAT, D("0.4"), D("0.55"), D("0.22"), 1),
        (Band.FLAT, D("0.5"), D("0.5"), D("0.25"), 0),
    ]
    assert [(ln.period_key, ln.tier_key) for ln in lines] == [
        ("2026-03", "2026-03"),
        ("2026-03", "2026-03"),
        ("2026-04", "2026-04"),
    ]


def dst_tariff() -> Tariff:
    day = [["00:00", "valley"], ["08:00", "flat"]]
    season = {"name": "all", "months": ALL_MONTHS, "workday": day, "weekend": day}
    version = {
        "effective_from": "2026-01-01",
        "prices": {"valley": "0.3", "flat": "0.5"},
        "seasons": [season],
    }
    return tariff_from_dict({"utility": "electricity", "versions": [version]})


@pytest.mark.parametrize(
    ("day", "valley_hours", "cost"),
    [
        # Spring forward: 00:00-08:00 lasts 7 h; 23 kWh over 23 h → valley 7, flat 16;
        # 7 × 0.3 + 16 × 0.5 = 2.1 + 8 = 10.1.
        ("2026-03-08", 7, "10.1"),
        # Fall back: 00:00-08:00 lasts 9 h; 25 kWh over 25 h → valley 9, flat 16;
        # 9 × 0.3 + 16 × 0.5 = 2.7 + 8 = 10.7.
        ("2026-11-01", 9, "10.7"),
    ],
)
def test_dst_days_in_new_york_have_a_7_or_9_hour_valley(
    day: str, valley_hours: int, cost: str
) -> None:
    start = at(f"{day} 00:00", NEW_YORK)
    end = at(f"{date.fromisoformat(day) + timedelta(days=1)} 00:00", NEW_YORK)
    segments = band_segments(start, end, dst_tariff(), NEW_YORK)
    assert [(s.band, s.end - s.start) for s in segments] == [
        (Band.VALLEY, timedelta(hours=valley_hours)),
        (Band.FLAT, timedelta(hours=16)),
    ]
    hours = valley_hours + 16
    lines = price_usage(Usage(start, end, D(hours)), dst_tariff(), NEW_YORK, {})
    assert [ln.quantity for ln in lines] == [D(valley_hours), D(16)]
    assert sum(ln.cost for ln in lines) == D(cost)


def test_period_starting_in_the_spring_gap_starts_when_the_clock_jumps() -> None:
    # 02:30 does not exist on 2026-03-08 in New York: the peak period starts at 03:00 EDT
    # (07:00 UTC); a period at 01:30 on 2026-11-01 starts at its first occurrence (05:30 UTC).
    day = [["00:00", "valley"], ["01:30", "flat"], ["02:30", "peak"], ["08:00", "flat"]]
    season = {"name": "all", "months": ALL_MONTHS, "workday": day}
    tariff = tariff_from_dict(
        {
            "utility": "electricity",
            "versions": [
                {
                    "effective_from": "2026-01-01",
                    "prices": {"valley": "0.3", "flat": "0.5", "peak": "0.9"},
                    "seasons": [season],
                }
            ],
        }
    )
    spring = band_segments(
        at("2026-03-08 00:00", NEW_YORK), at("2026-03-08 12:00", NEW_YORK), tariff, NEW_YORK
    )
    assert [s.start.time().isoformat() for s in spring] == [
        "05:00:00",
        "06:30:00",
        "07:00:00",
        "12:00:00",
    ]
    fall = band_segments(
        at("2026-11-01 00:00", NEW_YORK), at("2026-11-01 12:00", NEW_YORK), tariff, NEW_YORK
    )
    assert [(s.start.time().isoformat(), s.band) for s in fall][:2] == [
        ("04:00:00", Band.VALLEY),
        ("05:30:00", Band.FLAT),
    ]


def test_day_preview_lists_the_summer_periods_of_a_shanghai_workday() -> None:
    segments = band_segments(
        at("2026-07-15 00:00"), at("2026-07-16 00:00"), example_tariff(), SHANGHAI
    )
    assert [(s.start.astimezone(SHANGHAI).strftime("%H:%M"), s.band) for s in segments] == [
        (start, Band(band)) for start, band in SUMMER
    ]


def test_usage_before_the_first_version_is_refused() -> None:
    with pytest.raises(ValidationError, match="no tariff version in force at"):
        price_usage(
            usage("2025-12-31 23:00", "2025-12-31 23:15", "1"), example_tariff(), SHANGHAI, {}
        )


def test_zero_consumption_gives_no_lines() -> None:
    assert (
        price_usage(
            usage("2026-03-02 07:45", "2026-03-02 08:15", "0"), example_tariff(), SHANGHAI, {}
        )
        == []
    )


@pytest.mark.parametrize(
    ("start", "end", "total", "message"),
    [
        (datetime(2026, 3, 2, 1), datetime(2026, 3, 2, 2, tzinfo=UTC), "1", "start: a time zone"),  # noqa: DTZ001
        (datetime(2026, 3, 2, 2, tzinfo=UTC), datetime(2026, 3, 2, 2, tzinfo=UTC), "1", "end:"),
        (datetime(2026, 3, 2, 1, tzinfo=UTC), datetime(2026, 3, 2, 2, tzinfo=UTC), "-1", "total:"),
        (
            datetime(2026, 3, 2, 1, tzinfo=UTC),
            datetime(2026, 3, 2, 2, tzinfo=UTC),
            "0.0000001",
            "total: .* has more than 6",
        ),
    ],
)
def test_invalid_usage_is_refused(start: datetime, end: datetime, total: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Usage(start, end, D(total))


def test_usage_in_another_offset_is_kept_in_utc() -> None:
    start = datetime(2026, 3, 2, 8, tzinfo=SHANGHAI)
    reading = Usage(start, start + timedelta(minutes=15), D("1"))
    assert reading.start == datetime(2026, 3, 2, 0, tzinfo=UTC)
    assert reading.start.tzinfo is UTC


@pytest.mark.parametrize(
    ("zone", "day", "valley_hours", "flat_hours"),
    [
        ("America/Havana", "2026-03-08", 7, 16),  # 00:00 never shows: the day starts at 01:00
        ("America/Havana", "2026-11-01", 9, 16),  # 00:00-01:00 shows twice
        ("America/Sao_Paulo", "2018-02-17", 8, 17),  # 23:00-24:00 shows twice (old rules)
    ],
)
def test_clock_changes_at_midnight_still_tile_the_day(
    zone: str, day: str, valley_hours: int, flat_hours: int
) -> None:
    tz = ZoneInfo(zone)
    tariff = flat_tariff(("2018-01-01", "0.5"))
    tou = tariff_from_dict(
        {
            "utility": "electricity",
            "versions": [
                {**tariff_to_dict(dst_tariff())["versions"][0], "effective_from": "2018-01-01"}
            ],
        }
    )
    start = local_midnight(date.fromisoformat(day), tz)
    end = local_midnight(date.fromisoformat(day) + timedelta(days=1), tz)
    segments = band_segments(start, end, tou, tz)
    assert [(s.band, s.end - s.start) for s in segments] == [
        (Band.VALLEY, timedelta(hours=valley_hours)),
        (Band.FLAT, timedelta(hours=flat_hours)),
    ]
    assert len(band_segments(start, end, tariff, tz)) == 1
