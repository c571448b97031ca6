"""Tariffs as pure, immutable values: flat, time-of-use, tiered, seasonal, versioned.

Invariants (checked on construction; an invalid tariff cannot be built, by any route):
- A :class:`DaySchedule` has 1 to 14 periods; the first starts at 00:00, starts are on whole
  minutes (meters store HH:MM), naive, and strictly increasing. The band at local wall time ``t``
  is the band of the last period whose start is ``<= t``; the last period runs to midnight.
- A :class:`Season` has a non-empty name and a non-empty set of months in 1..12. A missing
  weekend schedule falls back to the workday one; a missing holiday schedule falls back to the
  weekend one, then to the workday one.
- A :class:`TierPlan` has at least one block; ``up_to`` bounds are cumulative use within the
  tier period (a local month or year), strictly increasing and positive, with at most six
  places; only the last block is unbounded (``up_to is None``), and it must be. Block prices are
  prices (>= 0, at most six places).
- A :class:`TariffVersion` has prices >= 0 with at most six places. Without seasons every
  instant is ``Band.FLAT``; with seasons, each month 1..12 is in exactly one season and season
  names are unique. Every band a schedule can show (``FLAT`` when there are no seasons) has a
  price, unless tiers in ``PRICE`` mode set the unit price. ``PRICE`` mode forbids seasons: a
  time-of-use tariff with tiers uses ``ADDER`` (Chinese residential TOU + 阶梯). No date is both
  a holiday and an adjusted workday (调休), and adjusted workdays are Saturdays or Sundays.
- A :class:`Tariff` has at least one version, sorted by ``effective_from`` with unique dates;
  a water tariff is flat or tiered only (no seasons).
- Prices are stored as an immutable, hashable mapping so versions can key caches; ``Tariff``
  and ``TariffVersion`` compute their hash once, because pricing looks them up per reading.

Validation messages start with the offending field's path relative to the object being built
(``periods[3]: ...``, ``blocks[1].up_to: ...``); ``definition.py`` prefixes the path of
the object inside the definition, giving e.g. ``versions[0].seasons[1].workday[3]: ...``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, time
from decimal import Decimal
from enum import StrEnum
from typing import TypeVar

from meterdesk.shared.errors import ValidationError
from meterdesk.shared.money import parse_price, parse_quantity

MAX_PERIODS_PER_DAY = 14
_E = TypeVar("_E", bound=StrEnum)


class Band(StrEnum):
    """Time-of-use bands: 尖 / 峰 / 平 / 谷 / 深谷."""

    SHARP = "sharp"
    PEAK = "peak"
    FLAT = "flat"
    VALLEY = "valley"
    DEEP_VALLEY = "deep_valley"


BAND_ORDER: tuple[Band, ...] = (Band.SHARP, Band.PEAK, Band.FLAT, Band.VALLEY, Band.DEEP_VALLEY)


class Utility(StrEnum):
    ELECTRICITY = "electricity"
    WATER = "water"


class TierPeriod(StrEnum):
    MONTH = "month"
    YEAR = "year"


class TierMode(StrEnum):
    PRICE = "price"  # the block price is the unit price
    ADDER = "adder"  # the block price is added to the band price


class _FrozenPrices(Mapping[Band, Decimal]):
    """A read-only, hashable copy of a band → price mapping."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[Band, Decimal]) -> None:
        self._data = {band: data[band] for band in BAND_ORDER if band in data}
        self._hash = hash(frozenset(self._data.items()))

    def __getitem__(self, band: Band) -> Decimal:
        return self._data[band]

    def __iter__(self) -> Iterator[Band]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, band: object) -> bool:  # faster than Mapping's try/except
        return band in self._data

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return repr(self._data)


@dataclass(frozen=True)
class Period:
    start: time
    band: Band

    def __post_init__(self) -> None:
        object.__setattr__(self, "band", parse_band(self.band, where="band"))


@dataclass(frozen=True)
class DaySchedule:
    periods: tuple[Period, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "periods", tuple(self.periods))
        count = len(self.periods)
        if not 1 <= count <= MAX_PERIODS_PER_DAY:
            raise ValidationError(
                f"periods: a day has 1 to {MAX_PERIODS_PER_DAY} periods, got {count}"
            )
        previous: time | None = None
        for index, period in enumerate(self.periods):
            start = period.start
            where = f"periods[{index}]"
            if start.tzinfo is not None or start.second or start.microsecond:
                raise ValidationError(
                    f"{where}: a start is a local wall time on a whole minute (HH:MM), not {start}"
                )
            if previous is None and start != time(0, 0):
                raise ValidationError(
                    f"{where}: the first period starts at 00:00, not {start:%H:%M}"
                )
            if previous is not None and start <= previous:
                raise ValidationError(
                    f"{where}: starts at {start:%H:%M}, not after the previous {previous:%H:%M}"
                )
            previous = start

    def band_at(self, wall: time) -> Band:
        """The band of the last period whose start is at or before ``wall``."""
        band = self.periods[0].band
        for period in self.periods:
            if period.start > wall:
                break
            band = period.band
        return band


@dataclass(frozen=True)
class Season:
    name: str
    months: frozenset[int]
    workday: DaySchedule
    weekend: DaySchedule | None = None
    holiday: DaySchedule | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "months", frozenset(self.months))
        if not self.name.strip():
            raise ValidationError("name: a season needs a name")
        if not self.months:
            raise ValidationError("months: a season needs at least one month")
        wrong = sorted(month for month in self.months if not 1 <= month <= 12)
        if wrong:
            raise ValidationError(f"months: {wrong} not in 1..12")


@dataclass(frozen=True)
class TierBlock:
    up_to: Decimal | None
    price: Decimal

    def __post_init__(self) -> None:
        if self.up_to is not None:
            up_to = parse_quantity(self.up_to, field="up_to")
            if up_to <= 0:
                raise ValidationError(f"up_to: a block bound must be positive, got {up_to}")
            object.__setattr__(self, "up_to", up_to)
        object.__setattr__(self, "price", parse_price(self.price, field="price"))


@dataclass(frozen=True)
class TierPlan:
    period: TierPeriod
    mode: TierMode
    blocks: tuple[TierBlock, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "period", parse_member(TierPeriod, self.period, where="period"))
        object.__setattr__(self, "mode", parse_member(TierMode, self.mode, where="mode"))
        object.__setattr__(self, "blocks", tuple(self.blocks))
        if not self.blocks:
            raise ValidationError("blocks: a tier plan needs at least one block")
        last = len(self.blocks) - 1
        previous: Decimal | None = None
        for index, block in enumerate(self.blocks):
            where = f"blocks[{index}].up_to"
            if block.up_to is None and index != last:
                raise ValidationError(f"{where}: only the last block may be unbounded")
            if block.up_to is not None and index == last:
                raise ValidationError(f"{where}: the last block must be unbounded (null)")
            if block.up_to is not None and previous is not None and block.up_to <= previous:
                raise ValidationError(f"{where}: {block.up_to} is not above {previous}")
            previous = block.up_to


@dataclass(frozen=True)
class TariffVersion:
    effective_from: date  # in force from local midnight (site zone) of this date
    prices: Mapping[Band, Decimal]
    seasons: tuple[Season, ...] = ()
    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()
    tiers: TierPlan | None = None
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prices: dict[Band, Decimal] = {}
        for band, price in self.prices.items():
            key = parse_band(band, where="prices")
            prices[key] = parse_price(price, field=f"prices.{key}")
        object.__setattr__(self, "prices", _FrozenPrices(prices))
        object.__setattr__(self, "seasons", tuple(self.seasons))
        object.__setattr__(self, "holidays", frozenset(self.holidays))
        object.__setattr__(self, "workdays", frozenset(self.workdays))
        _check_seasons(self.seasons)
        _check_calendar(self.holidays, self.workdays)
        _check_band_prices(self)
        fields = (self.prices, self.seasons, self.holidays, self.workdays, self.tiers)
        object.__setattr__(self, "_hash", hash((self.effective_from, *fields)))

    def __hash__(self) -> int:
        return self._hash

    def season_for(self, month: int) -> Season | None:
        """The season of a month, or None for a tariff without seasons."""
        for season in self.seasons:
            if month in season.months:
                return season
        return None


@dataclass(frozen=True)
class Tariff:
    utility: Utility
    versions: tuple[TariffVersion, ...]
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "utility", parse_member(Utility, self.utility, where="utility"))
        object.__setattr__(self, "versions", tuple(self.versions))
        if not self.versions:
            raise ValidationError("versions: a tariff needs at least one version")
        for index, version in enumerate(self.versions):
            if index and version.effective_from <= self.versions[index - 1].effective_from:
                raise ValidationError(
                    f"versions[{index}].effective_from: {version.effective_from} is not after "
                    f"{self.versions[index - 1].effective_from} (list versions oldest first, "
                    "one per date)"
                )
            if self.utility is Utility.WATER and version.seasons:
                raise ValidationError(
                    f"versions[{index}].seasons: a water tariff is flat or tiered, not time-of-use"
                )
        object.__setattr__(self, "_hash", hash((self.utility, self.versions)))

    def __hash__(self) -> int:
        return self._hash


def parse_member(kind: type[_E], value: object, *, where: str) -> _E:
    """An enum member from its value, or a ValidationError naming ``where`` and the choices."""
    if isinstance(value, kind):
        return value
    names = ", ".join(repr(member.value) for member in kind)
    if not isinstance(value, str):
        raise ValidationError(f"{where}: expected a string (one of {names}), got {value!r}")
    try:
        return kind(value)
    except ValueError:
        raise ValidationError(f"{where}: unknown value {value!r} (use one of {names})") from None


def parse_band(value: object, *, where: str) -> Band:
    return parse_member(Band, value, where=where)


def _check_seasons(seasons: tuple[Season, ...]) -> None:
    if not seasons:
        return
    owner: dict[int, int] = {}
    names: set[str] = set()
    for index, season in enumerate(seasons):
        if season.name in names:
            raise ValidationError(f"seasons[{index}].name: {season.name!r} is used twice")
        names.add(season.name)
        for month in sorted(season.months):
            if month in owner:
                raise ValidationError(
                    f"seasons[{index}].months: month {month} is already in seasons[{owner[month]}]"
                )
            owner[month] = index
    missing = sorted(set(range(1, 13)) - owner.keys())
    if missing:
        raise ValidationError(f"seasons: months {missing} are in no season (cover 1..12)")


def _check_calendar(holidays: frozenset[date], workdays: frozenset[date]) -> None:
    both = sorted(holidays & workdays)
    if both:
        raise ValidationError(f"workdays: {both[0]} is also listed as a holiday")
    for day in sorted(workdays):
        if day.weekday() < 5:
            raise ValidationError(
                f"workdays: {day} is a {day:%A}, already a workday (list weekend dates worked)"
            )


def _check_band_prices(version: TariffVersion) -> None:
    tiers = version.tiers
    if tiers is not None and tiers.mode is TierMode.PRICE:
        if version.seasons:
            raise ValidationError(
                "tiers.mode: a time-of-use tariff with tiers uses 'adder', not 'price'"
            )
        return
    if not version.seasons and Band.FLAT not in version.prices:
        raise ValidationError("prices: a tariff without seasons needs a 'flat' price")
    for index, season in enumerate(version.seasons):
        for name in ("workday", "weekend", "holiday"):
            schedule: DaySchedule | None = getattr(season, name)
            if schedule is None:
                continue
            for number, period in enumerate(schedule.periods):
                if period.band not in version.prices:
                    raise ValidationError(
                        f"prices: no price for band {period.band.value!r}, used by "
                        f"seasons[{index}].{name}[{number}]"
                    )
