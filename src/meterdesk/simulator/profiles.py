"""Load profiles and the built-in time-of-use day, in the meter's local time (pure).

A profile gives, for each local hour, the fraction of a meter's rated power (or rated flow) in
use: shops by day, apartments in the evening, offices on weekdays, public areas a little all
the time; weekends are lower. A deterministic noise factor per meter and hour (seeded, never the
process-wide random state) keeps meters of one profile from moving in lockstep while every run
with the same seed gives the same numbers.

Invariants:
- Everything is a function of (profile, local hour, seed key): no clock, no global state.
- :func:`hour_segments` splits ``[start, end)`` at local full hours, so power, band and noise are
  constant inside a segment and energy is power × duration of each segment.
- The TOU day (:data:`DAY_SCHEDULE`) changes band only at full local hours.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, tzinfo
from enum import IntEnum, StrEnum


class Band(IntEnum):
    """Tariff numbers as DL/T 645 uses them (DI1 = 01..04)."""

    SHARP = 1
    PEAK = 2
    FLAT = 3
    VALLEY = 4


# Local hour → band: valley 23–07, flat 07–10 and 12–17, peak 10–12, 17–19 and 21–23,
# sharp 19–21 (a common Chinese commercial pattern, simplified to whole hours).
_V, _F, _P, _S = Band.VALLEY, Band.FLAT, Band.PEAK, Band.SHARP
DAY_SCHEDULE: tuple[Band, ...] = (
    *(_V,) * 7,  # 00–07
    *(_F,) * 3,  # 07–10
    *(_P,) * 2,  # 10–12
    *(_F,) * 5,  # 12–17
    *(_P,) * 2,  # 17–19
    *(_S,) * 2,  # 19–21
    *(_P,) * 2,  # 21–23
    _V,  # 23–24
)
assert len(DAY_SCHEDULE) == 24


def band_at(local: datetime) -> Band:
    """The band in force at a local wall-clock time."""
    return DAY_SCHEDULE[local.hour]


class LoadProfile(StrEnum):
    APARTMENT = "apartment"
    SHOP = "shop"
    OFFICE = "office"
    PUBLIC = "public"
    CONSTANT = "constant"


def _hours(*pairs: tuple[int, int, float]) -> tuple[float, ...]:
    """24 fractions from ``(from_hour, to_hour, fraction)`` spans; uncovered hours are 0.05."""
    shape = [0.05] * 24
    for first, last, fraction in pairs:
        for hour in range(first, last):
            shape[hour] = fraction
    return tuple(shape)


# (weekday shape, weekend multiplier)
_SHAPES: dict[LoadProfile, tuple[tuple[float, ...], float]] = {
    LoadProfile.APARTMENT: (
        _hours((0, 6, 0.06), (6, 8, 0.30), (8, 17, 0.10), (17, 19, 0.35), (19, 23, 0.60)),
        0.9,
    ),
    LoadProfile.SHOP: (_hours((8, 9, 0.30), (9, 21, 0.70), (21, 22, 0.30)), 0.85),
    LoadProfile.OFFICE: (_hours((7, 8, 0.25), (8, 18, 0.65), (18, 20, 0.20)), 0.15),
    LoadProfile.PUBLIC: (_hours((0, 6, 0.30), (6, 18, 0.10), (18, 24, 0.40)), 0.9),
    LoadProfile.CONSTANT: (_hours((0, 24, 0.50)), 1.0),
}


def noise(seed_key: str, index: int, spread: float = 0.2) -> float:
    """A factor in ``[1 - spread, 1 + spread]`` fixed by ``seed_key`` and ``index``."""
    generator = random.Random(f"{seed_key}:{index}")  # noqa: S311 - simulation, not security
    return 1.0 + spread * (2.0 * generator.random() - 1.0)


def load_fraction(profile: LoadProfile, local: datetime, seed_key: str) -> float:
    """Fraction of rated power in use during the local hour of ``local`` (0..1.2)."""
    shape, weekend = _SHAPES[profile]
    fraction = shape[local.hour]
    if local.weekday() >= 5:
        fraction *= weekend
    hour_index = local.toordinal() * 24 + local.hour
    return fraction * noise(seed_key, hour_index)


def next_local_hour(moment: datetime, zone: tzinfo) -> datetime:
    """The first instant after ``moment`` at which the local clock shows a full hour."""
    local = moment.astimezone(zone)
    into_hour = timedelta(
        minutes=local.minute, seconds=local.second, microseconds=local.microsecond
    )
    return moment + (timedelta(hours=1) - into_hour)


def hour_segments(
    start: datetime, end: datetime, zone: tzinfo
) -> Iterator[tuple[datetime, datetime]]:
    """``[start, end)`` cut at local full hours, as consecutive ``(from, to)`` pairs."""
    cursor = start
    while cursor < end:
        boundary = min(next_local_hour(cursor, zone), end)
        yield cursor, boundary
        cursor = boundary
