"""Deduction summaries (扣费通知), pure: cadences, the periods they cover, and which period is
the latest complete one at an instant.

Invariants:
- A period is a span of the site's **local** calendar: a daily period is the local day
  [00:00, 24:00), a monthly one the local month from its first 00:00 to the next month's. Its
  bounds are UTC instants from :func:`meterdesk.shared.time.local_midnight`, so a day on which
  the clocks change lasts 23 or 25 hours, and a period means the same wall-clock span wherever
  the server runs.
- A period is *complete* once it has ended and ``settle`` more has passed: a reading measured
  before midnight may arrive (and be priced) a little after it, and a summary sent at 00:00:01
  would leave it out. The latest complete period is the only one a sender queues: a platform
  that was down for a week sends yesterday's, not seven.
- A period's key (``2026-12-06``, ``2026-11``) is its local date or month; with the cadence and
  the account it makes the event key, so the same summary is queued once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from meterdesk.shared.errors import ValidationError
from meterdesk.shared.time import local_date, local_midnight, month_start, next_month_start

#: How long after its end a period still waits for late readings before it is summarised.
SETTLE = timedelta(minutes=30)


class Cadence(StrEnum):
    OFF = "off"
    DAILY = "daily"
    MONTHLY = "monthly"


CADENCES = tuple(c.value for c in Cadence)


def cadence(value: str) -> Cadence:
    try:
        return Cadence(value.strip().lower())
    except ValueError:
        raise ValidationError(f"cadence: {value!r} is not one of {', '.join(CADENCES)}") from None


@dataclass(frozen=True)
class Period:
    cadence: Cadence
    first_day: date  # the local day, or the first day of the local month
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive

    @property
    def key(self) -> str:
        if self.cadence is Cadence.DAILY:
            return self.first_day.isoformat()
        return f"{self.first_day.year:04d}-{self.first_day.month:02d}"


def daily(day: date, tz: ZoneInfo) -> Period:
    return Period(
        Cadence.DAILY, day, local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz)
    )


def monthly(day: date, tz: ZoneInfo) -> Period:
    first = month_start(day)
    return Period(
        Cadence.MONTHLY,
        first,
        local_midnight(first, tz),
        local_midnight(next_month_start(first), tz),
    )


def period_of(which: Cadence, day: date, tz: ZoneInfo) -> Period:
    """The period of this cadence that contains the local ``day``."""
    if which is Cadence.DAILY:
        return daily(day, tz)
    if which is Cadence.MONTHLY:
        return monthly(day, tz)
    raise ValidationError("cadence: summaries are off, there is no period")


def latest_complete(
    which: Cadence, now: datetime, tz: ZoneInfo, settle: timedelta = SETTLE
) -> Period:
    """The newest period that ended at least ``settle`` before ``now``."""
    current = period_of(which, local_date(now - settle, tz), tz)
    return period_of(which, current.first_day - timedelta(days=1), tz)


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_MONTH = re.compile(r"\d{4}-\d{2}")


def parse_period(text: str, tz: ZoneInfo) -> Period:
    """``2026-12-06`` (a local day) or ``2026-11`` (a local month)."""
    raw = text.strip()
    try:
        if _DAY.fullmatch(raw):
            return daily(date.fromisoformat(raw), tz)
        if _MONTH.fullmatch(raw):
            return monthly(date.fromisoformat(f"{raw}-01"), tz)
    except ValueError:
        pass
    raise ValidationError(f"period: {text!r} is not a day like 2026-12-06 or a month like 2026-11")


def is_complete(period: Period, now: datetime, settle: timedelta = SETTLE) -> bool:
    return period.end + settle <= now


def event_key(period: Period, account_id: int) -> str:
    return f"summary:{period.cadence.value}:{account_id}:{period.key}"
