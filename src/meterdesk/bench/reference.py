"""A tiny, obviously-correct pricer for the bench workload, independent of the real one.

It takes the true (sorted, distinct) stream, and for each meter walks consecutive readings: the
consumption is the register difference (plus the modulus when the register wrapped) times CT;
the band is looked up from the hour of the interval's start in local time (the workload keeps
every interval inside one band); the monthly tier ladder is climbed with exact splits. The
expected deduction of a meter is the rounded sum. Nothing here is shared with the product code.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from meterdesk.bench.workload import MODULUS, START, ZONE, BenchMeter, Workload

TOU_PRICE = {
    "sharp": Decimal("1.3561"),
    "peak": Decimal("1.0827"),
    "flat": Decimal("0.6537"),
    "valley": Decimal("0.3126"),
}
TOU_HOURS = [
    (0, "valley"),
    (8, "flat"),
    (10, "peak"),
    (12, "sharp"),
    (14, "peak"),
    (17, "flat"),
    (21, "peak"),
    (23, "valley"),
]
TOU_TIERS = [(Decimal(200), Decimal(0)), (Decimal(400), Decimal("0.05")), (None, Decimal("0.3"))]
FLAT_TIERS = [
    (Decimal(100), Decimal("0.55")),
    (Decimal(300), Decimal("0.6")),
    (None, Decimal("0.85")),
]


def _band(at: datetime) -> str:
    hour = at.astimezone(ZoneInfo(ZONE)).hour
    return [band for start, band in TOU_HOURS if start <= hour][-1]


def _climb(
    used: Decimal, quantity: Decimal, ladder: list[tuple[Decimal | None, Decimal]], base: Decimal
) -> Decimal:
    cost, lower = Decimal(0), Decimal(0)
    for upper, price in ladder:
        top = used + quantity if upper is None else min(upper, used + quantity)
        portion = top - max(used, lower)
        if portion > 0:
            cost += portion * (base + price)
        if upper is not None:
            lower = upper
    return cost


def expected_fen(workload: Workload, opening: dict[int, Decimal]) -> dict[int, int]:
    """Expected total deduction per meter index, in fen."""
    by_meter: dict[int, list[tuple[datetime, Decimal]]] = {}
    for index, at, total in workload.truth:
        by_meter.setdefault(index, []).append((at, total))
    result = {}
    for meter in workload.meters:
        result[meter.index] = _meter_cost(
            meter, opening[meter.index], by_meter.get(meter.index, [])
        )
    return result


def _meter_cost(
    meter: BenchMeter, opening: Decimal, readings: list[tuple[datetime, Decimal]]
) -> int:
    exact, used = Decimal(0), Decimal(0)
    previous, previous_at = opening, START
    for at_end, total in sorted(readings):
        delta = total - previous if total >= previous else total + MODULUS - previous
        quantity = delta * meter.ct
        if meter.tariff == "tou":
            exact += _climb(used, quantity, TOU_TIERS, TOU_PRICE[_band(previous_at)])
        else:
            exact += _climb(used, quantity, FLAT_TIERS, Decimal(0))
        used += quantity
        previous, previous_at = total, at_end
    return int(exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) * 100)
