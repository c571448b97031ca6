"""Deduction summary periods: local days and months in the site's zone (23- and 25-hour days
included), and which period is the latest complete one at an instant."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from meterdesk.notifications.summary_periods import (
    SETTLE,
    Cadence,
    cadence,
    daily,
    event_key,
    is_complete,
    latest_complete,
    monthly,
    parse_period,
)
from meterdesk.shared.errors import ValidationError

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_a_day_in_shanghai_runs_from_local_midnight_to_local_midnight() -> None:
    day = daily(date(2026, 12, 6), SHANGHAI)
    assert (day.start, day.end) == (utc(2026, 12, 5, 16), utc(2026, 12, 6, 16))
    assert day.key == "2026-12-06"


@pytest.mark.parametrize(
    ("day", "hours", "start"),
    [
        (date(2026, 3, 29), 23, utc(2026, 3, 28, 23)),  # spring: 02:00 → 03:00
        (date(2026, 10, 25), 25, utc(2026, 10, 24, 22)),  # autumn: 03:00 → 02:00
        (date(2026, 6, 1), 24, utc(2026, 5, 31, 22)),
    ],
)
def test_a_day_on_which_the_clocks_change_lasts_23_or_25_hours(
    day: date, hours: int, start: datetime
) -> None:
    period = daily(day, BERLIN)
    assert period.start == start
    assert period.end - period.start == timedelta(hours=hours)


def test_a_month_ends_at_the_next_months_local_midnight() -> None:
    november = monthly(date(2026, 11, 17), SHANGHAI)
    assert november.key == "2026-11" and november.first_day == date(2026, 11, 1)
    assert (november.start, november.end) == (utc(2026, 10, 31, 16), utc(2026, 11, 30, 16))
    december = monthly(date(2026, 12, 31), SHANGHAI)
    assert december.end == utc(2026, 12, 31, 16)  # 2027-01-01 00:00 in Shanghai
    february = monthly(date(2028, 2, 10), BERLIN)  # a leap year
    assert february.end - february.start == timedelta(days=29)
    march = monthly(date(2026, 3, 1), BERLIN)  # loses an hour to summer time
    assert march.end - march.start == timedelta(days=31, hours=-1)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(2026, 12, 6, 16, 29), "2026-12-05"),  # 00:29 on the 7th: still settling
        (utc(2026, 12, 6, 16, 30), "2026-12-06"),  # 00:30: the 6th is complete
        (utc(2026, 12, 7, 15, 59), "2026-12-06"),  # 23:59 on the 7th
        (utc(2026, 12, 31, 17), "2026-12-31"),  # 01:00 on New Year's day
    ],
)
def test_the_latest_complete_day_is_yesterday_once_it_has_settled(
    now: datetime, expected: str
) -> None:
    period = latest_complete(Cadence.DAILY, now, SHANGHAI)
    assert period.key == expected
    assert is_complete(period, now)
    assert not is_complete(daily(period.first_day + timedelta(days=1), SHANGHAI), now)


def test_the_latest_complete_day_is_the_local_one_not_utc() -> None:
    # 00:45 on 30 March in Berlin is 22:45 UTC on the 29th: the 29th (local) is complete,
    # and in UTC it is still the 29th
    assert latest_complete(Cadence.DAILY, utc(2026, 3, 29, 22, 45), BERLIN).key == "2026-03-29"
    assert latest_complete(Cadence.DAILY, utc(2026, 3, 29, 22, 45), SHANGHAI).key == "2026-03-29"
    assert latest_complete(Cadence.DAILY, utc(2026, 3, 29, 16, 45), SHANGHAI).key == "2026-03-29"
    assert latest_complete(Cadence.DAILY, utc(2026, 3, 29, 16, 15), SHANGHAI).key == "2026-03-28"


def test_the_latest_complete_month_is_last_month_after_it_settled() -> None:
    first = utc(2026, 11, 30, 16)  # 1 December 00:00 in Shanghai
    assert latest_complete(Cadence.MONTHLY, first, SHANGHAI).key == "2026-10"
    assert latest_complete(Cadence.MONTHLY, first + SETTLE, SHANGHAI).key == "2026-11"
    january = utc(2027, 1, 15)
    assert latest_complete(Cadence.MONTHLY, january, SHANGHAI).key == "2026-12"


def test_a_platform_down_for_a_week_summarises_yesterday_only() -> None:
    assert latest_complete(Cadence.DAILY, utc(2026, 12, 14, 2), SHANGHAI).key == "2026-12-13"


def test_periods_and_cadences_are_parsed_or_refused_clearly() -> None:
    assert parse_period("2026-12-06", SHANGHAI) == daily(date(2026, 12, 6), SHANGHAI)
    assert parse_period(" 2026-11 ", SHANGHAI) == monthly(date(2026, 11, 1), SHANGHAI)
    for bad in ("2026-13", "2026-02-30", "yesterday", "2026-1-5", ""):
        with pytest.raises(ValidationError, match="period"):
            parse_period(bad, SHANGHAI)
    assert cadence(" Daily ") is Cadence.DAILY
    with pytest.raises(ValidationError, match="cadence"):
        cadence("weekly")
    with pytest.raises(ValidationError, match="off"):
        latest_complete(Cadence.OFF, utc(2026, 12, 6), SHANGHAI)


def test_the_event_key_names_cadence_account_and_period() -> None:
    assert event_key(daily(date(2026, 12, 6), SHANGHAI), 42) == "summary:daily:42:2026-12-06"
    assert event_key(monthly(date(2026, 11, 3), SHANGHAI), 7) == "summary:monthly:7:2026-11"
