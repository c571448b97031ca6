"""The demo's three tariffs, in the JSON format ``meterdesk tariff create`` takes
(``docs/tariffs.md``). Periods are in the site's local time; every boundary is on the hour."""

from __future__ import annotations

from typing import Any

from meterdesk.demo.plan import COMMERCIAL, RESIDENTIAL, WATER

ALL_MONTHS = list(range(1, 13))


def residential(effective_from: str) -> dict[str, Any]:
    """尖峰平谷 for flats, with a monthly tier adder on top (Chinese residential TOU + 阶梯)."""
    return {
        "utility": "electricity",
        "versions": [
            {
                "effective_from": effective_from,
                "prices": {
                    "sharp": "0.7800",
                    "peak": "0.6170",
                    "flat": "0.5200",
                    "valley": "0.3070",
                },
                "seasons": [
                    {
                        "name": "all year",
                        "months": ALL_MONTHS,
                        "workday": [
                            ["00:00", "valley"],
                            ["06:00", "flat"],
                            ["08:00", "peak"],
                            ["11:00", "flat"],
                            ["18:00", "peak"],
                            ["19:00", "sharp"],
                            ["21:00", "peak"],
                            ["22:00", "valley"],
                        ],
                    }
                ],
                "tiers": {
                    "period": "month",
                    "mode": "adder",
                    "blocks": [
                        {"up_to": "260", "price": "0"},
                        {"up_to": "400", "price": "0.05"},
                        {"up_to": None, "price": "0.30"},
                    ],
                },
            }
        ],
    }


def commercial(effective_from: str) -> dict[str, Any]:
    """尖峰平谷 for shops and offices."""
    return {
        "utility": "electricity",
        "versions": [
            {
                "effective_from": effective_from,
                "prices": {
                    "sharp": "1.3561",
                    "peak": "1.0827",
                    "flat": "0.6537",
                    "valley": "0.3126",
                },
                "seasons": [
                    {
                        "name": "all year",
                        "months": ALL_MONTHS,
                        "workday": [
                            ["00:00", "valley"],
                            ["08:00", "flat"],
                            ["10:00", "peak"],
                            ["12:00", "sharp"],
                            ["14:00", "peak"],
                            ["17:00", "flat"],
                            ["19:00", "peak"],
                            ["22:00", "flat"],
                            ["23:00", "valley"],
                        ],
                    }
                ],
            }
        ],
    }


def water(effective_from: str) -> dict[str, Any]:
    """阶梯水价: the price of each m³ depends on how much was used earlier in the month."""
    return {
        "utility": "water",
        "versions": [
            {
                "effective_from": effective_from,
                "prices": {},
                "tiers": {
                    "period": "month",
                    "mode": "price",
                    "blocks": [
                        {"up_to": "15", "price": "3.45"},
                        {"up_to": "30", "price": "4.83"},
                        {"up_to": None, "price": "6.21"},
                    ],
                },
            }
        ],
    }


def tariffs(effective_from: str) -> dict[str, dict[str, Any]]:
    return {
        RESIDENTIAL: residential(effective_from),
        COMMERCIAL: commercial(effective_from),
        WATER: water(effective_from),
    }
