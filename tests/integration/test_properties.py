"""Order of arrival does not matter: the money core's central promise, as a property.

A generated in-order reading stream for 1-3 meters (some rolling over at a small register
modulus, priced flat or time-of-use with monthly tiers, sometimes crossing a billing month, on
one account with or without an overdraft) is delivered twice into two fresh databases: once
sorted and de-duplicated in one batch, once with duplicates, shuffled and cut into random
batches. Balances, posted totals, exact costs and the accepted readings must be identical, and
each ledger must balance (entries sum to zero, every account's balance equals the sum of its
transfers).

SQLite only (a fresh file per delivery, copied from a template with the schema): the property is
about the pipeline's logic, which is the same on both databases; the deterministic late-data
tests in ``test_consumption.py`` run on PostgreSQL too.
"""

from __future__ import annotations

import itertools
import random
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from builders import (
    T0,
    check_books,
    flat_definition,
    ledger_code_balances,
    local,
    make_meter,
    make_org,
    make_tariff,
    open_account,
    row_counts,
    tou_tier_definition,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from meterdesk.billing import accounts, tariff_change
from meterdesk.billing.ingest import IncomingReading, Ingestor
from meterdesk.billing.tables import period_totals
from meterdesk.db.database import Database
from meterdesk.db.engine import build_engine
from meterdesk.metering.tables import meters, readings
from meterdesk.shared.time import FakeClock
from meterdesk.tariffs.service import find_tariff

pytestmark = [pytest.mark.integration, pytest.mark.slow]

D = Decimal
MONTH_END = local("2026-11-30 20:00")  # streams starting here cross into December


@dataclass(frozen=True)
class MeterPlan:
    tariff: str  # "flat" or "tou_tier"
    modulus: Decimal
    opening: Decimal
    steps: tuple[tuple[int, int], ...]  # (minutes after the previous reading, advance in 1e-4)


@dataclass(frozen=True)
class Scenario:
    start: datetime
    credit: str
    overdraft: str
    meters: tuple[MeterPlan, ...]


@st.composite
def meter_plans(draw: st.DrawFn) -> MeterPlan:
    rolls_over = draw(st.booleans())
    if rolls_over:  # close below a 10 000 register, so the stream wraps
        modulus, opening = D(10_000), D(draw(st.integers(99_400_000, 99_999_999))).scaleb(-4)
    else:
        modulus, opening = D(1_000_000), D(draw(st.integers(0, 10**9))).scaleb(-4)
    steps = draw(
        st.lists(st.tuples(st.integers(1, 300), st.integers(0, 30_000)), min_size=1, max_size=18)
    )
    return MeterPlan(draw(st.sampled_from(["flat", "tou_tier"])), modulus, opening, tuple(steps))


scenarios = st.builds(
    Scenario,
    start=st.sampled_from([T0, MONTH_END]),
    credit=st.sampled_from(["0", "3", "40", "1000"]),
    overdraft=st.sampled_from(["0", "0", "5", "30"]),
    meters=st.lists(meter_plans(), min_size=1, max_size=3).map(tuple),
)


def in_order_stream(scenario: Scenario, meter_ids: list[int]) -> list[IncomingReading]:
    stream = []
    for meter_id, plan in zip(meter_ids, scenario.meters, strict=True):
        at, total = scenario.start, plan.opening
        for gap, advance in plan.steps:
            at += timedelta(minutes=gap)
            total = (total + D(advance).scaleb(-4)) % plan.modulus
            stream.append(IncomingReading(meter_id, at, total))
    return stream


def messy_delivery(stream: list[IncomingReading], rng: random.Random) -> list[list[Any]]:
    """Duplicated (some readings twice or three times), shuffled, cut into random batches."""
    copies = [r for r in stream for _ in range(rng.choice((1, 1, 2, 3)))]
    rng.shuffle(copies)
    cuts = sorted(rng.sample(range(1, len(copies)), k=rng.randint(0, len(copies) - 1)))
    bounds = [0, *cuts, len(copies)]
    return [copies[a:b] for a, b in itertools.pairwise(bounds)]


@dataclass
class Outcome:
    balances: dict[str, int]
    totals: dict[tuple[str, str], tuple[Decimal, Decimal, int]]
    readings: set[tuple[str, int, datetime, Decimal]]
    counts: dict[str, int]


def deliver(template: Path, scenario: Scenario, batches: Any) -> Outcome:
    """Build the scenario's world in a fresh database, ingest the batches, read the outcome."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.sqlite3"
        shutil.copy(template, path)
        engine = build_engine(f"sqlite:///{path}")
        try:
            clock = FakeClock(scenario.start)
            db = Database(engine=engine, clock=clock)
            meter_ids = build_world(db, scenario)
            ingestor = Ingestor(db)
            for batch in batches(meter_ids):
                clock.advance(timedelta(seconds=1))
                if batch is SWITCH:
                    switch_every_tariff(db, meter_ids)
                else:
                    ingestor.ingest(batch)
            check_books(db)
            return read_outcome(db)
        finally:
            engine.dispose()


SWITCH: Any = object()  # in a delivery: change every meter's tariff here (flat <-> TOU + tiers)


def switch_every_tariff(db: Database, meter_ids: list[int]) -> None:
    with db.read() as conn:
        account = accounts.account_by_number(conn, organisation_id=1, number="A-1")
        points = [
            tariff_change.switch_point(
                conn, organisation_id=1, account_id=int(account["id"]), meter_id=meter_id
            )
            for meter_id in meter_ids
        ]
    for point in points:
        other = "tou" if point.tariff == "flat" else "flat"
        tariff_change.change_tariff(
            db,
            organisation_id=1,
            account_id=point.account_id,
            meter_id=point.meter_id,
            tariff_id=find_tariff(db, organisation_id=1, name=other),
            actor="property",
            idempotency_key=f"switch-{point.meter_id}",
        )


def build_world(db: Database, scenario: Scenario) -> list[int]:
    org = make_org(db)
    tariff_ids = {
        "flat": make_tariff(db, org, "flat", flat_definition("0.6537")),
        "tou_tier": make_tariff(db, org, "tou", tou_tier_definition()),
    }
    meter_ids = [
        make_meter(db, org, f"M{index}", modulus=f"{plan.modulus}")
        for index, plan in enumerate(scenario.meters)
    ]
    openings = [
        (meter_id, tariff_ids[plan.tariff], f"{plan.opening}")
        for meter_id, plan in zip(meter_ids, scenario.meters, strict=True)
    ]
    open_account(db, org, "A-1", openings, credit=scenario.credit, overdraft=scenario.overdraft)
    return meter_ids


def read_outcome(db: Database) -> Outcome:
    with db.read() as conn:
        number = dict(conn.execute(select(meters.c.id, meters.c.number)).all())
        # A month whose lines were all superseded keeps a row of zeros: the same as no row.
        totals = {
            (number[m], p): (q, c, f)
            for m, p, q, c, f in conn.execute(
                select(
                    period_totals.c.meter_id,
                    period_totals.c.period_key,
                    period_totals.c.quantity,
                    period_totals.c.exact_cost,
                    period_totals.c.posted_fen,
                )
            )
            if q or c or f
        }
        accepted = {
            (number[m], g, at, total)
            for m, g, at, total in conn.execute(
                select(
                    readings.c.meter_id,
                    readings.c.generation,
                    readings.c.measured_at,
                    readings.c.register_total,
                )
            )
        }
    counts = row_counts(db)
    # Ledger accounts are opened by their first transfer: a late reading that re-priced a posted
    # fen away (deduction, then its correction) leaves a revenue account at 0 that the in-order
    # delivery never opened. Money-wise that is no account at all.
    balances = {code: fen for code, fen in ledger_code_balances(db).items() if fen}
    return Outcome(balances, totals, accepted, {"quarantine": counts["quarantine"]})


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios, rng=st.randoms(use_true_random=False))
def test_any_order_duplication_and_batching_bills_like_the_sorted_stream(
    template: Path, scenario: Scenario, rng: random.Random
) -> None:
    def sorted_once(meter_ids: list[int]) -> list[list[IncomingReading]]:
        return [sorted(in_order_stream(scenario, meter_ids), key=lambda r: r.measured_at)]

    def messy(meter_ids: list[int]) -> list[list[IncomingReading]]:
        return messy_delivery(in_order_stream(scenario, meter_ids), random.Random(seed))

    seed = rng.randint(0, 2**32)
    expected = deliver(template, scenario, sorted_once)
    actual = deliver(template, scenario, messy)

    assert expected.counts["quarantine"] == 0  # a clean stream never needs an operator
    assert actual.readings == expected.readings
    assert actual.totals == expected.totals
    assert actual.balances == expected.balances
    assert sum(actual.balances.values()) == 0


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios, rng=st.randoms(use_true_random=False))
def test_a_tariff_change_mid_stream_bills_alike_whatever_the_order_of_arrival(
    template: Path, scenario: Scenario, rng: random.Random
) -> None:
    """Each meter's tariff changes (flat <-> TOU with monthly tiers) once its first ``k``
    readings have arrived, so the switch is at its ``k``-th reading (or the opening). In order:
    those readings, the change, the rest. Messy: the ``k``-th reading and a random part of the
    earlier ones (duplicated, shuffled, in random batches), the change, then the rest together
    with the held-back earlier readings — which arrive late, before the switch, and must be
    priced by the old tariff. Both deliveries bill alike, to the fen."""
    seed = rng.randint(0, 2**32)
    cuts = [rng.randint(0, len(plan.steps)) for plan in scenario.meters]

    def split(meter_ids: list[int]) -> tuple[list[IncomingReading], list[IncomingReading]]:
        stream = in_order_stream(scenario, meter_ids)
        by_meter = {m: [r for r in stream if r.meter_id == m] for m in meter_ids}
        before = [r for m, cut in zip(meter_ids, cuts, strict=True) for r in by_meter[m][:cut]]
        after = [r for m, cut in zip(meter_ids, cuts, strict=True) for r in by_meter[m][cut:]]
        return before, after

    def in_order(meter_ids: list[int]) -> list[Any]:
        before, after = split(meter_ids)
        return [before, SWITCH, after] if before else [SWITCH, after]

    def messy(meter_ids: list[int]) -> list[Any]:
        mixer = random.Random(seed)
        before, after = split(meter_ids)
        last = {r.meter_id: r for r in before}  # each meter's switch reading must come first
        held = [r for r in before if r not in last.values() and mixer.random() < 0.5]
        first = [r for r in before if r not in held]
        early = messy_delivery(first, mixer) if len(first) > 1 else [first]
        late = messy_delivery(after + held, mixer) if len(after + held) > 1 else [after + held]
        return [*early, SWITCH, *late]

    expected = deliver(template, scenario, in_order)
    actual = deliver(template, scenario, messy)

    assert expected.counts["quarantine"] == 0
    assert actual.readings == expected.readings
    assert actual.totals == expected.totals
    assert actual.balances == expected.balances
