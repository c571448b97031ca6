"""Pure, exact pricing of metered consumption under a tariff.

``price_usage`` turns one reading window ``[start, end)`` into priced lines:

1. ``band_segments`` splits the window at every version start (local midnight of its
   ``effective_from``), time-of-use period start (each local day's 00:00 is one), and local
   month start (billing month and tier period; a year start is a month start). Local wall times
   become instants with ``shared.time.local_to_utc``: on a 23-hour day a period whose start the
   clock skips begins when the clock jumps; on a 25-hour day the first occurrence counts.
   A tariff without seasons has no periods, so only month and version starts split it.
2. Quantities are spread over segments by duration (integer microseconds) with the
   largest-remainder method in units of 1e-6, so the parts sum to the total exactly; ties go to
   the earlier segment. Band registers are spread over the segments that show their band, or over
   all segments when the tariff never shows that band in the window (meter clock or table
   mismatch), keeping the register's band.
3. Tiers: pieces, in time order then band order, climb the ladder of their tier key starting
   from ``tier_used`` plus what this call already placed; a piece crossing a bound is split.

All arithmetic runs in ``shared.money.EXACT``, which raises rather than rounds; rounding to fen
happens later, in the ledger. Day plans (period starts as UTC instants, keys) are cached per
(version, local date, zone), so pricing a reading inside one period is a few cache hits; keep
parsed ``Tariff`` objects alive between readings (their hash is computed once) rather than
re-parsing a definition per reading.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import NamedTuple, cast
from zoneinfo import ZoneInfo

from meterdesk.shared.errors import ValidationError
from meterdesk.shared.money import EXACT, parse_quantity
from meterdesk.shared.time import (
    local_midnight,
    local_to_utc,
    month_key,
    next_month_start,
    require_utc,
)
from meterdesk.tariffs.model import (
    BAND_ORDER,
    Band,
    DaySchedule,
    Season,
    Tariff,
    TariffVersion,
    TierMode,
    TierPeriod,
    TierPlan,
    parse_band,
)

ZERO = Decimal(0)
_ONE_DAY = timedelta(days=1)
_MICROSECOND = timedelta(microseconds=1)
_BAND_RANK = {band: rank for rank, band in enumerate(BAND_ORDER)}


@dataclass(frozen=True)
class Usage:
    """Consumption measured over ``[start, end)`` (aware instants, kept in UTC).

    With ``by_band`` given the registers are billed and ``total`` is informational: a meter's
    total register and the sum of its band registers may differ in the last digit.
    """

    start: datetime
    end: datetime
    total: Decimal  # primary units (kWh / m³), >= 0, at most 6 places
    by_band: Mapping[Band, Decimal] | None = None  # the meter's own TOU registers, if any

    def __post_init__(self) -> None:
        if self.start.tzinfo is not UTC:
            object.__setattr__(self, "start", require_utc(self.start, field="start"))
        if self.end.tzinfo is not UTC:
            object.__setattr__(self, "end", require_utc(self.end, field="end"))
        if not self.start < self.end:
            raise ValidationError(f"end: {self.end.isoformat()} is not after the start")
        object.__setattr__(self, "total", _quantity(self.total, where="total"))
        if self.by_band is not None:
            registers = {
                parse_band(band, where="by_band"): _quantity(value, where=f"by_band.{band}")
                for band, value in self.by_band.items()
            }
            object.__setattr__(self, "by_band", registers)


@dataclass(frozen=True)
class Segment:
    """A stretch of time with one band, one version, one billing month and one tier period."""

    start: datetime
    end: datetime
    band: Band
    version: TariffVersion
    period_key: str  # billing month "YYYY-MM", local time
    tier_key: str | None  # tier period "YYYY-MM" or "YYYY"; None when the version has no tiers

    @property
    def duration_us(self) -> int:
        return (self.end - self.start) // _MICROSECOND


@dataclass(frozen=True)
class PricedLine:
    start: datetime
    end: datetime
    band: Band
    quantity: Decimal
    unit_price: Decimal
    cost: Decimal  # quantity * unit_price, exact
    tier_block: int | None
    tier_key: str | None
    period_key: str
    version_from: date


class _DayPlan(NamedTuple):
    starts: tuple[datetime, ...]  # period starts as UTC instants, the first is the day's start
    bands: tuple[Band, ...]
    end: datetime  # start of the next plan: next local midnight (or month start, no seasons)
    next_day: date
    period_key: str
    tier_key: str | None


def tier_key_for(instant: datetime, plan: TierPlan, tz: ZoneInfo) -> str:
    """The tier period of an instant: ``YYYY-MM`` (month tiers) or ``YYYY``, in local time."""
    return _tier_key(_local_day(require_utc(instant), tz), plan)


def band_segments(start: datetime, end: datetime, tariff: Tariff, tz: ZoneInfo) -> list[Segment]:
    """Split ``[start, end)`` where the band, version, billing month or tier period changes."""
    start = require_utc(start, field="start")
    end = require_utc(end, field="end")
    if not start < end:
        raise ValidationError(f"end: {end.isoformat()} is not after {start.isoformat()}")
    return _segments(start, end, tariff, tz)


def price_usage(
    usage: Usage, tariff: Tariff, tz: ZoneInfo, tier_used: Mapping[str, Decimal]
) -> list[PricedLine]:
    """Price one reading window; ``tier_used`` is what earlier readings used per tier key."""
    segments = _segments(usage.start, usage.end, tariff, tz)
    if usage.by_band is None:
        expected = usage.total
        pieces = _spread_total(expected, segments)
    else:
        expected = _sum(usage.by_band.values())
        pieces = _spread_registers(usage.by_band, segments)
    lines = _place(pieces, tier_used)
    placed = _sum(line.quantity for line in lines)
    if placed != expected:  # pragma: no cover - the apportionment makes this impossible
        raise AssertionError(f"priced {placed}, expected {expected} for {usage}")
    return lines


# --- segments ------------------------------------------------------------------------------


def _segments(start: datetime, end: datetime, tariff: Tariff, tz: ZoneInfo) -> list[Segment]:
    starts = _version_starts(tariff, tz)
    index = bisect_right(starts, start) - 1
    if index < 0:
        raise ValidationError(
            f"no tariff version in force at {start.isoformat()} (the first is in force from "
            f"{tariff.versions[0].effective_from} local time)"
        )
    segments: list[Segment] = []
    last = len(starts) - 1
    while True:
        stop = end if index == last or end <= starts[index + 1] else starts[index + 1]
        _walk(tariff.versions[index], start, stop, tz, segments)
        if stop == end:
            return segments
        start = stop
        index += 1


def _walk(
    version: TariffVersion, start: datetime, end: datetime, tz: ZoneInfo, out: list[Segment]
) -> None:
    """Append the segments of ``[start, end)``, all under ``version``, to ``out``."""
    plan = _day_plan(version, start.astimezone(tz).date(), tz)
    while start >= plan.end:  # a local day whose midnight repeats (clock set back at 00:00)
        plan = _day_plan(version, plan.next_day, tz)
    at = start
    while True:
        period = bisect_right(plan.starts, at) - 1
        cut = plan.starts[period + 1] if period + 1 < len(plan.starts) else plan.end
        if end < cut:
            cut = end
        out.append(Segment(at, cut, plan.bands[period], version, plan.period_key, plan.tier_key))
        if cut == end:
            return
        at = cut
        if at >= plan.end:
            plan = _day_plan(version, plan.next_day, tz)


# --- quantities ----------------------------------------------------------------------------

_Piece = tuple[Segment, Band, Decimal]


def _spread_total(total: Decimal, segments: list[Segment]) -> list[_Piece]:
    if len(segments) == 1:
        segment = segments[0]
        return [(segment, segment.band, total)]
    parts = apportion(total, [segment.duration_us for segment in segments])
    return [(segment, segment.band, part) for segment, part in zip(segments, parts, strict=True)]


def _spread_registers(registers: Mapping[Band, Decimal], segments: list[Segment]) -> list[_Piece]:
    ranked: list[tuple[int, int, _Piece]] = []
    for band in BAND_ORDER:
        quantity = registers.get(band, ZERO)
        if not quantity:
            continue
        chosen = [i for i, segment in enumerate(segments) if segment.band is band]
        if not chosen:  # the tariff never shows this band here: keep the meter's label
            chosen = list(range(len(segments)))
        parts = apportion(quantity, [segments[i].duration_us for i in chosen])
        for i, part in zip(chosen, parts, strict=True):
            ranked.append((i, _BAND_RANK[band], (segments[i], band, part)))
    ranked.sort(key=lambda item: (item[0], item[1]))
    return [piece for _, _, piece in ranked]


def apportion(quantity: Decimal, weights: list[int]) -> list[Decimal]:
    """Split ``quantity`` (at most 6 places) by positive integer weights, exactly.

    Largest remainder in units of 1e-6: each part gets its floor share, the units left over go
    to the largest remainders, ties to the earlier part. The parts sum to ``quantity``.
    """
    scaled = EXACT.scaleb(quantity, 6)
    if scaled != scaled.to_integral_value():
        raise ValidationError(f"quantity: {quantity} has more than 6 decimal places")
    units = int(scaled)
    whole = sum(weights)
    shares = [divmod(units * weight, whole) for weight in weights]
    left = units - sum(share for share, _ in shares)
    order = sorted(range(len(shares)), key=lambda i: (-shares[i][1], i))
    bonus = set(order[:left])
    return [EXACT.scaleb(Decimal(share + (i in bonus)), -6) for i, (share, _) in enumerate(shares)]


# --- tiers and prices ------------------------------------------------------------------------


def _place(pieces: list[_Piece], tier_used: Mapping[str, Decimal]) -> list[PricedLine]:
    placed: dict[str, Decimal] = {}
    lines: list[PricedLine] = []
    for segment, band, quantity in pieces:
        if not quantity:
            continue
        version = segment.version
        tiers = version.tiers
        if tiers is None:
            price = _band_price(version, band, segment.band)
            lines.append(_line(segment, band, quantity, price, None))
            continue
        key = cast(str, segment.tier_key)  # a version with tiers always gives a tier key
        used = placed[key] if key in placed else tier_used.get(key, ZERO)
        placed[key] = _climb(segment, band, quantity, used, tiers, lines)
    return lines


def _climb(
    segment: Segment,
    band: Band,
    quantity: Decimal,
    used: Decimal,
    tiers: TierPlan,
    lines: list[PricedLine],
) -> Decimal:
    """Place ``quantity`` on the ladder from ``used``, one line per block; return the new use."""
    base = (
        ZERO if tiers.mode is TierMode.PRICE else _band_price(segment.version, band, segment.band)
    )
    index = _block_index(tiers, used)
    remaining = quantity
    while True:
        block = tiers.blocks[index]
        take = remaining
        if block.up_to is not None:
            take = min(remaining, EXACT.subtract(block.up_to, used))
        lines.append(_line(segment, band, take, EXACT.add(base, block.price), index))
        used = EXACT.add(used, take)
        remaining = EXACT.subtract(remaining, take)
        if not remaining:
            return used
        index += 1


def _block_index(tiers: TierPlan, used: Decimal) -> int:
    """The block where the next unit goes: the first whose bound is above ``used``."""
    for index, block in enumerate(tiers.blocks):
        if block.up_to is None or used < block.up_to:
            return index
    return len(tiers.blocks) - 1  # unreachable: the last block is unbounded


def _band_price(version: TariffVersion, band: Band, shown: Band) -> Decimal:
    prices = version.prices
    if band in prices:
        return prices[band]
    if shown in prices:
        return prices[shown]
    raise ValidationError(  # unreachable for validated versions; kept for a clear message
        f"version from {version.effective_from} has no price for {band.value!r} or {shown.value!r}"
    )


def _line(
    segment: Segment, band: Band, quantity: Decimal, price: Decimal, block: int | None
) -> PricedLine:
    return PricedLine(
        start=segment.start,
        end=segment.end,
        band=band,
        quantity=quantity,
        unit_price=price,
        cost=EXACT.multiply(quantity, price),
        tier_block=block,
        tier_key=segment.tier_key,
        period_key=segment.period_key,
        version_from=segment.version.effective_from,
    )


def _sum(values: Iterable[Decimal]) -> Decimal:
    total = ZERO
    for value in values:
        total = EXACT.add(total, value)
    return total


def _quantity(value: object, *, where: str) -> Decimal:
    quantity = parse_quantity(value, field=where)
    if quantity < 0:
        raise ValidationError(f"{where}: consumption cannot be negative ({quantity})")
    return quantity


# --- local calendar (cached) -----------------------------------------------------------------


@lru_cache(maxsize=1024)
def _version_starts(tariff: Tariff, tz: ZoneInfo) -> tuple[datetime, ...]:
    return tuple(local_midnight(version.effective_from, tz) for version in tariff.versions)


@lru_cache(maxsize=16384)
def _day_plan(version: TariffVersion, day: date, tz: ZoneInfo) -> _DayPlan:
    season = version.season_for(day.month)
    if season is None:  # no periods: one plan runs to the end of the local month
        next_day = next_month_start(day)
        end = local_midnight(next_day, tz)
        starts: tuple[datetime, ...] = (local_midnight(day, tz),)
        bands: tuple[Band, ...] = (Band.FLAT,)
    else:
        next_day = day + _ONE_DAY
        end = local_midnight(next_day, tz)
        starts, bands = _period_starts(_schedule_for(version, season, day), day, end, tz)
    tier_key = None if version.tiers is None else _tier_key(day, version.tiers)
    return _DayPlan(starts, bands, end, next_day, month_key(day), tier_key)


def _period_starts(
    schedule: DaySchedule, day: date, end: datetime, tz: ZoneInfo
) -> tuple[tuple[datetime, ...], tuple[Band, ...]]:
    starts: list[datetime] = []
    bands: list[Band] = []
    for period in schedule.periods:
        at = local_to_utc(day, period.start, tz)
        if at >= end:  # skipped by a clock change that crosses midnight
            break
        if starts and at <= starts[-1]:  # skipped by a clock change: the later period wins
            bands[-1] = period.band
            continue
        starts.append(at)
        bands.append(period.band)
    return tuple(starts), tuple(bands)


def _schedule_for(version: TariffVersion, season: Season, day: date) -> DaySchedule:
    """Holiday if listed; workday if an adjusted workday (调休); weekend on Sat/Sun."""
    if day in version.holidays:
        return season.holiday or season.weekend or season.workday
    if day in version.workdays or day.weekday() < 5:
        return season.workday
    return season.weekend or season.workday


def _tier_key(day: date, plan: TierPlan) -> str:
    return month_key(day) if plan.period is TierPeriod.MONTH else f"{day.year:04d}"


def _local_day(instant: datetime, tz: ZoneInfo) -> date:
    """The local date whose [midnight, next midnight) holds ``instant``."""
    day = instant.astimezone(tz).date()
    following = day + _ONE_DAY
    return following if local_midnight(following, tz) <= instant else day
