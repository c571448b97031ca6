"""A seeded ingest workload: meters, tariffs, accounts and a messy reading stream.

Everything comes from one ``random.Random(seed)``, so the same seed gives the same workload on
any machine. Readings are on quarter hours and every tariff boundary is on the hour, so each
interval lies inside one time-of-use band; that lets the reference pricer in
:mod:`meterdesk.bench.reference` stay tiny and obviously right. The stream has the faults the
platform must survive: duplicates, reordering, late arrivals (several batches later) and register
rollovers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

START = datetime(2026, 11, 9, 16, 0, tzinfo=UTC)  # 2026-11-10 00:00 in Asia/Shanghai
STEP = timedelta(minutes=15)
MODULUS = Decimal(100_000)
ZONE = "Asia/Shanghai"

TOU_TARIFF = {
    "utility": "electricity",
    "versions": [
        {
            "effective_from": "2026-01-01",
            "prices": {"sharp": "1.3561", "peak": "1.0827", "flat": "0.6537", "valley": "0.3126"},
            "seasons": [
                {
                    "name": "all year",
                    "months": list(range(1, 13)),
                    "workday": [
                        ["00:00", "valley"],
                        ["08:00", "flat"],
                        ["10:00", "peak"],
                        ["12:00", "sharp"],
                        ["14:00", "peak"],
                        ["17:00", "flat"],
                        ["21:00", "peak"],
                        ["23:00", "valley"],
                    ],
                }
            ],
            "tiers": {
                "period": "month",
                "mode": "adder",
                "blocks": [
                    {"up_to": "200", "price": "0"},
                    {"up_to": "400", "price": "0.05"},
                    {"up_to": None, "price": "0.3"},
                ],
            },
        }
    ],
}
TIERED_TARIFF = {
    "utility": "electricity",
    "versions": [
        {
            "effective_from": "2026-01-01",
            "prices": {},
            "tiers": {
                "period": "month",
                "mode": "price",
                "blocks": [
                    {"up_to": "100", "price": "0.55"},
                    {"up_to": "300", "price": "0.6"},
                    {"up_to": None, "price": "0.85"},
                ],
            },
        }
    ],
}


@dataclass(frozen=True)
class BenchMeter:
    index: int
    tariff: str  # "tou" or "tiered"
    start_total: Decimal
    ct: int
    credit: Decimal


@dataclass
class Workload:
    seed: int
    meters: list[BenchMeter]
    rounds: int
    # (meter index, measured_at, raw register total) — the true, sorted, distinct stream
    truth: list[tuple[int, datetime, Decimal]] = field(default_factory=list)
    # the same readings as delivered: duplicated, reordered, late, in batches
    batches: list[list[tuple[int, datetime, Decimal]]] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return sum(len(batch) for batch in self.batches)


def build(*, seed: int, meters: int, rounds: int, batch_size: int = 2000) -> Workload:
    rng = random.Random(seed)
    bench_meters = [_meter(rng, i) for i in range(meters)]
    workload = Workload(seed=seed, meters=bench_meters, rounds=rounds)
    totals = {m.index: m.start_total for m in bench_meters}
    for round_number in range(1, rounds + 1):
        at = START + STEP * round_number
        for meter in bench_meters:
            step = (
                Decimal(rng.randint(30_000, 200_000)).scaleb(-4) / meter.ct
            )  # 3–20 kWh primary per quarter hour
            totals[meter.index] = (totals[meter.index] + step.quantize(Decimal("0.0001"))) % MODULUS
            workload.truth.append((meter.index, at, totals[meter.index]))
    workload.batches = _deliver(rng, workload.truth, batch_size)
    return workload


def _meter(rng: random.Random, index: int) -> BenchMeter:
    near_rollover = rng.random() < 0.05
    start = (
        MODULUS - Decimal(rng.randint(1, 40)) if near_rollover else Decimal(rng.randint(0, 50_000))
    )
    credit = Decimal(20) if rng.random() < 0.1 else Decimal(5000)  # some run into arrears
    return BenchMeter(
        index, "tou" if rng.random() < 0.6 else "tiered", start, rng.choice((1, 1, 1, 2, 5)), credit
    )


def _deliver(
    rng: random.Random, truth: list[tuple[int, datetime, Decimal]], batch_size: int
) -> list[list[tuple[int, datetime, Decimal]]]:
    """5 % duplicates, 10 % swapped with a neighbour, 2 % delayed by several batches."""
    stream = list(truth)
    for i in range(len(stream) - 1):
        if rng.random() < 0.10:
            j = min(len(stream) - 1, i + rng.randint(1, 50))
            stream[i], stream[j] = stream[j], stream[i]
    delayed: list[tuple[int, tuple[int, datetime, Decimal]]] = []
    kept: list[tuple[int, datetime, Decimal]] = []
    for item in stream:
        if rng.random() < 0.02:
            delayed.append((len(kept) + batch_size * rng.randint(3, 6), item))
        else:
            kept.append(item)
    for position, item in sorted(delayed, key=lambda p: p[0], reverse=True):
        kept.insert(min(position, len(kept)), item)
    for _ in range(len(truth) // 20):
        kept.insert(rng.randint(0, len(kept)), rng.choice(truth))
    return [kept[i : i + batch_size] for i in range(0, len(kept), batch_size)]
