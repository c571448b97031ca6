"""Tariff definitions: parsing, writing, and errors that name the field."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import date, time
from decimal import Decimal
from typing import Any

import pytest

from meterdesk.shared.errors import ValidationError
from meterdesk.tariffs.definition import (
    tariff_from_dict,
    tariff_to_dict,
    version_from_dict,
    version_to_dict,
)
from meterdesk.tariffs.model import Band, Period, TierMode, TierPeriod, Utility

EXAMPLE: dict[str, Any] = {
    "utility": "electricity",
    "versions": [
        {
            "effective_from": "2026-01-01",
            "prices": {"sharp": "1.3", "peak": "1.05", "flat": "0.68", "valley": "0.32"},
            "seasons": [
                {
                    "name": "summer",
                    "months": [7, 8, 9],
                    "workday": [
                        ["00:00", "valley"],
                        ["08:00", "flat"],
                        ["10:00", "peak"],
                        ["11:00", "sharp"],
                        ["13:00", "peak"],
                        ["15:00", "flat"],
                        ["23:00", "valley"],
                    ],
                },
                {
                    "name": "rest",
                    "months": [1, 2, 3, 4, 5, 6, 10, 11, 12],
                    "workday": [["00:00", "valley"], ["08:00", "flat"], ["22:00", "valley"]],
                    "weekend": [["00:00", "valley"]],
                },
            ],
            "holidays": ["2026-10-01"],
            "workdays": ["2026-10-10"],
            "tiers": {
                "period": "month",
                "mode": "adder",
                "blocks": [
                    {"up_to": "200", "price": "0"},
                    {"up_to": "400", "price": "0.05"},
                    {"up_to": None, "price": "0.30"},
                ],
            },
        }
    ],
}


def test_product_example_parses_into_the_model() -> None:
    tariff = tariff_from_dict(EXAMPLE)
    assert tariff.utility is Utility.ELECTRICITY
    (version,) = tariff.versions
    assert version.effective_from == date(2026, 1, 1)
    assert version.prices[Band.PEAK] == Decimal("1.05")
    summer, rest = version.seasons
    assert summer.months == frozenset({7, 8, 9})
    assert summer.workday.periods[3] == Period(time(11, 0), Band.SHARP)
    assert summer.weekend is None
    assert rest.weekend is not None
    assert version.holidays == frozenset({date(2026, 10, 1)})
    assert version.workdays == frozenset({date(2026, 10, 10)})
    assert version.tiers is not None
    assert version.tiers.period is TierPeriod.MONTH
    assert version.tiers.mode is TierMode.ADDER
    assert [block.up_to for block in version.tiers.blocks] == [Decimal(200), Decimal(400), None]


def test_writing_gives_json_with_strings_for_money_and_reads_back_equal() -> None:
    tariff = tariff_from_dict(EXAMPLE)
    written = tariff_to_dict(tariff)
    text = json.dumps(written)
    assert '"1.05"' in text
    assert tariff_from_dict(json.loads(text)) == tariff
    assert tariff_to_dict(tariff_from_dict(written)) == written


def test_optional_keys_may_be_missing_or_null_and_prices_may_be_integers() -> None:
    tariff = tariff_from_dict(
        {
            "utility": "water",
            "versions": [{"effective_from": "2026-01-01", "prices": {"flat": 3}, "tiers": None}],
        }
    )
    (version,) = tariff.versions
    assert version.prices == {Band.FLAT: Decimal(3)}
    assert version.seasons == ()
    assert version.tiers is None


def test_one_version_round_trips_on_its_own() -> None:
    version = tariff_from_dict(EXAMPLE).versions[0]
    assert version_from_dict(version_to_dict(version)) == version


def test_equal_tariffs_hash_equal() -> None:
    assert hash(tariff_from_dict(EXAMPLE)) == hash(tariff_from_dict(copy.deepcopy(EXAMPLE)))


def _edit(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    change(data)
    return data


def _version(data: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = data["versions"][0]
    return result


def _rest_workday(data: dict[str, Any]) -> list[list[str]]:
    result: list[list[str]] = _version(data)["seasons"][1]["workday"]
    return result


INVALID = [
    (lambda d: _rest_workday(d).__setitem__(2, ["07:00", "valley"]),
     "versions[0].seasons[1].workday[2]: starts at 07:00, not after the previous 08:00"),
    (lambda d: _rest_workday(d).__setitem__(0, ["01:00", "valley"]),
     "versions[0].seasons[1].workday[0]: the first period starts at 00:00"),
    (lambda d: _rest_workday(d).__setitem__(1, ["24:00", "flat"]),
     "versions[0].seasons[1].workday[1]: expected a start time HH:MM"),
    (lambda d: _rest_workday(d).__setitem__(1, ["08:00", "purple"]),
     "versions[0].seasons[1].workday[1]: unknown value 'purple'"),
    (lambda d: _rest_workday(d).__setitem__(1, ["08:00"]),
     "versions[0].seasons[1].workday[1]: expected a pair"),
    (lambda d: _version(d)["seasons"][1].__setitem__("weekend", [["00:00", "valley"]] * 15),
     "versions[0].seasons[1].weekend: a day has 1 to 14 periods, got 15"),
    (lambda d: _version(d)["prices"].__setitem__("peak", 1.05),
     "versions[0].prices.peak: give a decimal string, not a float"),
    (lambda d: _version(d)["prices"].__setitem__("peak", "-1"),
     "versions[0].prices.peak: a price cannot be negative"),
    (lambda d: _version(d)["prices"].__setitem__("peak", "0.0000001"),
     "versions[0].prices.peak: 0.0000001 has more than 6 decimal places"),
    (lambda d: _version(d)["prices"].pop("sharp"),
     "versions[0].prices: no price for band 'sharp', used by seasons[0].workday[3]"),
    (lambda d: _version(d)["prices"].__setitem__("cheap", "1"),
     "versions[0].prices: unknown value 'cheap'"),
    (lambda d: _version(d)["tiers"]["blocks"][1].__setitem__("up_to", "100"),
     "versions[0].tiers.blocks[1].up_to: 100 is not above 200"),
    (lambda d: _version(d)["tiers"]["blocks"][2].__setitem__("up_to", "1000"),
     "versions[0].tiers.blocks[2].up_to: the last block must be unbounded"),
    (lambda d: _version(d)["tiers"]["blocks"][0].__setitem__("up_to", None),
     "versions[0].tiers.blocks[0].up_to: only the last block may be unbounded"),
    (lambda d: _version(d)["tiers"]["blocks"][0].__setitem__("up_to", "0"),
     "versions[0].tiers.blocks[0].up_to: a block bound must be positive"),
    (lambda d: _version(d)["tiers"]["blocks"][0].__setitem__("price", 0.5),
     "versions[0].tiers.blocks[0].price: give a decimal string, not a float"),
    (lambda d: _version(d)["tiers"].__setitem__("blocks", []),
     "versions[0].tiers.blocks: a tier plan needs at least one block"),
    (lambda d: _version(d)["tiers"].__setitem__("mode", "price"),
     "versions[0].tiers.mode: a time-of-use tariff with tiers uses 'adder'"),
    (lambda d: _version(d)["tiers"].__setitem__("period", "week"),
     "versions[0].tiers.period: unknown value 'week'"),
    (lambda d: _version(d)["seasons"][0].__setitem__("months", [6, 7, 8, 9]),
     "versions[0].seasons[1].months: month 6 is already in seasons[0]"),
    (lambda d: _version(d)["seasons"][0].__setitem__("months", [7, 8]),
     "versions[0].seasons: months [9] are in no season"),
    (lambda d: _version(d)["seasons"][0].__setitem__("months", [7, 8, 9, 13]),
     "versions[0].seasons[0].months[3]: a month is an integer 1..12, got 13"),
    (lambda d: _version(d)["seasons"][0].__setitem__("months", [7, 8, 9, 9]),
     "versions[0].seasons[0].months[3]: month 9 is listed twice"),
    (lambda d: _version(d)["seasons"][1].__setitem__("name", "summer"),
     "versions[0].seasons[1].name: 'summer' is used twice"),
    (lambda d: _version(d)["seasons"][1].__setitem__("name", " "),
     "versions[0].seasons[1].name: a season needs a name"),
    (lambda d: _version(d).__setitem__("workdays", ["2026-10-12"]),
     "versions[0].workdays: 2026-10-12 is a Monday, already a workday"),
    (lambda d: _version(d).__setitem__("workdays", ["2026-10-03", "2026-10-01"]),
     "versions[0].workdays: 2026-10-01 is also listed as a holiday"),
    (lambda d: _version(d).__setitem__("holidays", ["2026-13-01"]),
     "versions[0].holidays[0]: expected a date YYYY-MM-DD, got '2026-13-01'"),
    (lambda d: _version(d).__setitem__("holidays", ["2026-10-01", "2026-10-01"]),
     "versions[0].holidays[1]: 2026-10-01 is listed twice"),
    (lambda d: _version(d).__setitem__("effective_from", "20260101"),
     "versions[0].effective_from: expected a date YYYY-MM-DD"),
    (lambda d: _version(d).pop("prices"), "versions[0].prices: required"),
    (lambda d: _version(d).__setitem__("price", {}), "versions[0].price: unknown key"),
    (lambda d: d["versions"].append(copy.deepcopy(_version(d))),
     "versions[1].effective_from: 2026-01-01 is not after 2026-01-01"),
    (lambda d: d.__setitem__("utility", "water"),
     "versions[0].seasons: a water tariff is flat or tiered, not time-of-use"),
    (lambda d: d.__setitem__("utility", "gas"), "utility: unknown value 'gas'"),
    (lambda d: d.__setitem__("versions", []), "versions: a tariff needs at least one version"),
    (lambda d: d.__setitem__("versions", {}), "versions: expected a list, got dict"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "message"), INVALID, ids=[m for _, m in INVALID])
def test_invalid_definition_names_the_field(
    change: Callable[[dict[str, Any]], object], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        tariff_from_dict(_edit(change))
    text = str(caught.value)
    assert text.startswith(message), text


def test_a_definition_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ValidationError, match="definition: expected an object, got list"):
        tariff_from_dict([])


def test_a_flat_tariff_needs_a_flat_price_unless_tiers_set_the_price() -> None:
    with pytest.raises(ValidationError, match=r"versions\[0\]\.prices: .* needs a 'flat' price"):
        tariff_from_dict(
            {"utility": "water", "versions": [{"effective_from": "2026-01-01", "prices": {}}]}
        )
