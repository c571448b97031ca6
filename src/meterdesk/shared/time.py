"""Instants, clocks and local time.

Invariants:
- An instant is a timezone-aware ``datetime`` in UTC; naive datetimes are refused at the edges.
- Local time exists only where the business defines it (TOU periods, billing months, friendly
  hours). :func:`local_to_utc` turns a wall-clock time on a local date into the first instant at
  which the site's clock shows that time or later, which gives one clear answer on days with a
  daylight-saving gap (the period starts when the clock jumps past it) or overlap (the first
  occurrence counts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from meterdesk.shared.errors import ValidationError

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class FakeClock:
    """A clock tests and the accelerated demo move by hand."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now = self.now + delta


def require_utc(value: datetime, *, field: str = "time") -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"{field}: a time zone is required ({value.isoformat()})")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        raise ValidationError(f"{field}: out of range ({value.isoformat()})") from None


def parse_instant(text: str, *, field: str = "time") -> datetime:
    """ISO 8601 with an offset (``Z`` allowed), or milliseconds since the epoch."""
    raw = text.strip()
    if raw.isdigit():
        try:
            return datetime.fromtimestamp(int(raw) / 1000, UTC)
        except (OverflowError, OSError, ValueError):  # beyond year 9999, or the platform's range
            raise ValidationError(f"{field}: {text!r} ms since the epoch is out of range") from None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"{field}: {text!r} is not an ISO 8601 time") from None
    return require_utc(parsed, field=field)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown time zone {name!r} (use an IANA name)") from None


def is_known_zone(name: str) -> bool:
    return name in available_timezones()


def local_to_utc(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """First instant at which the local clock on ``day`` shows ``wall`` or later."""
    naive = datetime.combine(day, wall)
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == naive:
        return first  # exists; fold=0 is the first occurrence when the time repeats
    # In a gap (clocks jump forward): the answer is the instant of the jump. Search between the
    # two interpretations, to the microsecond.
    low = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = first
    low, high = min(low, high), max(low, high)
    while high - low > timedelta(microseconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(tz).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return high


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return local_to_utc(day, time(0, 0), tz)


def local_date(instant: datetime, tz: ZoneInfo) -> date:
    return instant.astimezone(tz).date()


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month_start(day: date) -> date:
    return date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)


def month_key(day: date) -> str:
    """A billing period's name: ``YYYY-MM`` of the local month."""
    return f"{day.year:04d}-{day.month:02d}"
