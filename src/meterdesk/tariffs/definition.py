"""Tariff definitions as plain, JSON-able dicts, and back.

The format mirrors the model (see ``model.py``); an example::

    {"utility": "electricity", "versions": [{"effective_from": "2026-01-01",
      "prices": {"peak": "1.05", "flat": "0.68", "valley": "0.32"},
      "seasons": [{"name": "all", "months": [1, 2, ..., 12],
                   "workday": [["00:00", "valley"], ["08:00", "flat"], ["10:00", "peak"]],
                   "weekend": null, "holiday": null}],
      "holidays": ["2026-10-01"], "workdays": ["2026-10-10"],
      "tiers": {"period": "month", "mode": "adder",
                "blocks": [{"up_to": "200", "price": "0"}, {"up_to": null, "price": "0.30"}]}}]}

Rules: prices and quantities are decimal strings (integers allowed, floats refused: they are not
exact); dates are ``YYYY-MM-DD``; period starts ``HH:MM``; unknown keys are refused (a typo must
not silently drop a price). Optional keys (``seasons``, ``holidays``, ``workdays``, ``tiers``,
``weekend``, ``holiday``) may be missing or null. Every error names the field it is about, as a
path from the top of the definition: ``versions[0].seasons[1].workday[3]: ...``.
``tariff_to_dict`` writes every key, in a stable order, so ``tariff_from_dict`` round-trips it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, time
from decimal import Decimal
from typing import Any

from meterdesk.shared.errors import ValidationError
from meterdesk.shared.money import parse_price, parse_quantity
from meterdesk.tariffs.model import (
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
    parse_band,
    parse_member,
)

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME = re.compile(r"(\d{2}):(\d{2})")
_VERSION_KEYS = ("effective_from", "prices", "seasons", "holidays", "workdays", "tiers")


def tariff_from_dict(data: object) -> Tariff:
    fields = _object(data, "", required=("utility", "versions"))
    utility = parse_member(Utility, fields["utility"], where="utility")
    versions = tuple(
        version_from_dict(item, where=f"versions[{index}]")
        for index, item in enumerate(_list(fields["versions"], "versions"))
    )
    with _within(""):
        return Tariff(utility, versions)


def tariff_to_dict(tariff: Tariff) -> dict[str, Any]:
    return {
        "utility": tariff.utility.value,
        "versions": [version_to_dict(version) for version in tariff.versions],
    }


def version_from_dict(data: object, *, where: str = "") -> TariffVersion:
    """One version; ``where`` is its path in the enclosing definition, for error messages."""
    fields = _object(data, where, required=_VERSION_KEYS[:2], optional=_VERSION_KEYS[2:])
    seasons = fields.get("seasons")
    tiers = fields.get("tiers")
    args = (
        _date(fields["effective_from"], _at(where, "effective_from")),
        _prices(fields["prices"], _at(where, "prices")),
        tuple(
            _season(item, f"{_at(where, 'seasons')}[{index}]")
            for index, item in enumerate(_list(seasons, _at(where, "seasons")))
        ),
        _dates(fields.get("holidays"), _at(where, "holidays")),
        _dates(fields.get("workdays"), _at(where, "workdays")),
        None if tiers is None else _tiers(tiers, _at(where, "tiers")),
    )
    with _within(where):
        return TariffVersion(*args)


def version_to_dict(version: TariffVersion) -> dict[str, Any]:
    tiers = version.tiers
    return {
        "effective_from": version.effective_from.isoformat(),
        "prices": {band.value: _text(price) for band, price in version.prices.items()},
        "seasons": [_season_to_dict(season) for season in version.seasons],
        "holidays": [day.isoformat() for day in sorted(version.holidays)],
        "workdays": [day.isoformat() for day in sorted(version.workdays)],
        "tiers": None if tiers is None else _tiers_to_dict(tiers),
    }


# --- parsing ---------------------------------------------------------------------------------


def _prices(value: object, where: str) -> dict[Band, Decimal]:
    fields = _object(value, where)
    prices: dict[Band, Decimal] = {}
    for name, price in fields.items():
        band = parse_band(name, where=where)
        prices[band] = parse_price(price, field=f"{where}.{name}")
    return prices


def _season(value: object, where: str) -> Season:
    keys = ("name", "months", "workday")
    fields = _object(value, where, required=keys, optional=("weekend", "holiday"))
    name = fields["name"]
    if not isinstance(name, str):
        raise ValidationError(f"{where}.name: expected a string, got {name!r}")
    args = (
        name,
        _months(fields["months"], f"{where}.months"),
        _schedule(fields["workday"], f"{where}.workday"),
        _optional_schedule(fields.get("weekend"), f"{where}.weekend"),
        _optional_schedule(fields.get("holiday"), f"{where}.holiday"),
    )
    with _within(where):
        return Season(*args)


def _months(value: object, where: str) -> frozenset[int]:
    months: set[int] = set()
    for index, item in enumerate(_list(value, where)):
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= 12:
            raise ValidationError(f"{where}[{index}]: a month is an integer 1..12, got {item!r}")
        if item in months:
            raise ValidationError(f"{where}[{index}]: month {item} is listed twice")
        months.add(item)
    return frozenset(months)


def _optional_schedule(value: object, where: str) -> DaySchedule | None:
    return None if value is None else _schedule(value, where)


def _schedule(value: object, where: str) -> DaySchedule:
    periods = tuple(
        _period(item, f"{where}[{index}]") for index, item in enumerate(_list(value, where))
    )
    with _within(where, strip="periods"):
        return DaySchedule(periods)


def _period(value: object, where: str) -> Period:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValidationError(f'{where}: expected a pair ["HH:MM", band], got {value!r}')
    return Period(_time(value[0], where), parse_band(value[1], where=where))


def _tiers(value: object, where: str) -> TierPlan:
    fields = _object(value, where, required=("period", "mode", "blocks"))
    period = parse_member(TierPeriod, fields["period"], where=f"{where}.period")
    mode = parse_member(TierMode, fields["mode"], where=f"{where}.mode")
    blocks = tuple(
        _block(item, f"{where}.blocks[{index}]")
        for index, item in enumerate(_list(fields["blocks"], f"{where}.blocks"))
    )
    with _within(where):
        return TierPlan(period, mode, blocks)


def _block(value: object, where: str) -> TierBlock:
    fields = _object(value, where, required=("up_to", "price"))
    raw = fields["up_to"]
    up_to = None if raw is None else parse_quantity(raw, field=f"{where}.up_to")
    price = parse_price(fields["price"], field=f"{where}.price")
    with _within(where):
        return TierBlock(up_to, price)


def _dates(value: object, where: str) -> frozenset[date]:
    days: set[date] = set()
    for index, item in enumerate(_list(value, where)):
        day = _date(item, f"{where}[{index}]")
        if day in days:
            raise ValidationError(f"{where}[{index}]: {day} is listed twice")
        days.add(day)
    return frozenset(days)


def _date(value: object, where: str) -> date:
    if isinstance(value, str) and _DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValidationError(f"{where}: expected a date YYYY-MM-DD, got {value!r}")


def _time(value: object, where: str) -> time:
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValidationError(f"{where}: expected a start time HH:MM (00:00-23:59), got {value!r}")
    return time(int(match[1]), int(match[2]))


def _object(
    value: object, where: str, *, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()
) -> dict[str, object]:
    """A JSON object; with ``required`` given, its keys are checked (none missing, none unknown)."""
    label = where or "definition"
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ValidationError(f"{label}: expected an object, got {type(value).__name__}")
    if required:
        missing = [key for key in required if key not in value]
        if missing:
            raise ValidationError(f"{_at(where, missing[0])}: required")
        unknown = sorted(set(value) - set(required) - set(optional))
        if unknown:
            allowed = ", ".join((*required, *optional))
            raise ValidationError(f"{_at(where, unknown[0])}: unknown key (allowed: {allowed})")
    return value


def _list(value: object, where: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise ValidationError(f"{where}: expected a list, got {type(value).__name__}")
    return list(value)


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


@contextmanager
def _within(where: str, *, strip: str = "") -> Iterator[None]:
    """Prefix the model's relative error paths with the object's path in the definition."""
    try:
        yield
    except ValidationError as error:
        message = str(error)
        if strip and message.startswith(strip):
            message = message[len(strip) :]
        if not where:
            raise
        joint = "" if message.startswith(("[", ":")) else "."
        raise ValidationError(f"{where}{joint}{message}") from None


# --- writing ---------------------------------------------------------------------------------


def _season_to_dict(season: Season) -> dict[str, Any]:
    return {
        "name": season.name,
        "months": sorted(season.months),
        "workday": _schedule_to_list(season.workday),
        "weekend": None if season.weekend is None else _schedule_to_list(season.weekend),
        "holiday": None if season.holiday is None else _schedule_to_list(season.holiday),
    }


def _schedule_to_list(schedule: DaySchedule) -> list[list[str]]:
    return [[f"{period.start:%H:%M}", period.band.value] for period in schedule.periods]


def _tiers_to_dict(tiers: TierPlan) -> dict[str, Any]:
    return {
        "period": tiers.period.value,
        "mode": tiers.mode.value,
        "blocks": [
            {
                "up_to": None if block.up_to is None else _text(block.up_to),
                "price": _text(block.price),
            }
            for block in tiers.blocks
        ],
    }


def _text(value: Decimal) -> str:
    return f"{value:f}"
