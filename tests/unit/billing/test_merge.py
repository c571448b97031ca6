"""Placing readings among accepted ones (``merge_readings``), the intervals that follow from
them, and running-total rounding (``PeriodTotal``) — pure, no database."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from meterdesk.billing.model import PeriodTotal, intervals, merge_readings
from meterdesk.metering.model import (
    MeterProfile,
    QuarantineReason,
    Reading,
    ReadingSource,
    Utility,
    order_key,
)

D = Decimal
T0 = datetime(2026, 11, 2, tzinfo=UTC)
METER = MeterProfile(
    meter_id=1,
    organisation_id=1,
    site_id=1,
    utility=Utility.ELECTRICITY,
    ct_ratio=D(1),
    pt_ratio=D(1),
    modulus=D(10000),
    max_rate_per_hour=D(500),
    has_band_registers=False,
    generation=0,
)


def r(
    minutes: int,
    total: str,
    generation: int = 0,
    source: ReadingSource = ReadingSource.REALTIME,
) -> Reading:
    return Reading(1, generation, T0 + timedelta(minutes=minutes), D(total), source=source)


def totals(readings: list[Reading]) -> list[str]:
    return [f"{reading.total:f}" for reading in readings]


# --- merge_readings ----------------------------------------------------------------------------


def test_readings_after_the_cursor_are_appended_and_priced_from_the_cursor() -> None:
    merge = merge_readings(METER, [r(0, "100")], [r(10, "101"), r(20, "103")])

    assert totals(merge.sequence) == ["100", "101", "103"]
    assert totals(merge.accepted) == ["101", "103"]
    assert merge.reprice_from == 0
    assert not merge.late
    assert merge.rejected == []


def test_a_resent_reading_is_a_duplicate_and_changes_nothing() -> None:
    merge = merge_readings(METER, [r(0, "100"), r(10, "101")], [r(10, "101.0000")])

    assert merge.duplicates == 1
    assert merge.accepted == []
    assert merge.reprice_from is None


def test_a_different_value_at_an_accepted_time_is_a_conflicting_duplicate() -> None:
    merge = merge_readings(METER, [r(0, "100"), r(10, "101")], [r(10, "102")])

    [(rejected, verdict)] = merge.rejected
    assert rejected.total == D("102")
    assert verdict.reason_code is QuarantineReason.CONFLICTING_DUPLICATE
    assert "already accepted with total 101" in verdict.reason


def test_a_late_reading_is_placed_by_measurement_time_and_reprices_from_its_predecessor() -> None:
    existing = [r(0, "100"), r(10, "101"), r(30, "105"), r(40, "106")]

    merge = merge_readings(METER, existing, [r(20, "103")])

    assert totals(merge.sequence) == ["100", "101", "103", "105", "106"]
    assert merge.late
    assert merge.sequence[merge.reprice_from or 0].total == D("101")
    pairs = intervals(merge.sequence, merge.reprice_from or 0)
    assert [(a.total, b.total) for a, b in pairs] == [
        (D("101"), D("103")),
        (D("103"), D("105")),
        (D("105"), D("106")),
    ]


def test_a_reading_before_everything_accepted_starts_the_sequence() -> None:
    merge = merge_readings(METER, [r(10, "101")], [r(0, "100")])

    assert totals(merge.sequence) == ["100", "101"]
    assert merge.reprice_from == 0
    assert merge.late


def test_a_reading_that_does_not_fit_before_the_next_accepted_one_is_inconsistent() -> None:
    merge = merge_readings(METER, [r(0, "100"), r(20, "110")], [r(10, "120")])

    [(_, verdict)] = merge.rejected
    assert verdict.reason_code is QuarantineReason.INCONSISTENT_WITH_LATER
    assert merge.sequence == [r(0, "100"), r(20, "110")]


def test_a_decreasing_reading_is_rejected_and_the_next_one_is_judged_by_the_last_accepted() -> None:
    merge = merge_readings(METER, [r(0, "1000")], [r(10, "20"), r(20, "1001")])

    [(rejected, verdict)] = merge.rejected
    assert rejected.total == D("20")
    assert verdict.reason_code is QuarantineReason.DECREASED
    assert totals(merge.sequence) == ["1000", "1001"]


def test_a_jump_is_rejected_unless_an_operator_released_it() -> None:
    jump = merge_readings(METER, [r(0, "100")], [r(60, "700")])
    released = merge_readings(METER, [r(0, "100")], [r(60, "700", source=ReadingSource.RELEASED)])

    assert jump.rejected[0][1].reason_code is QuarantineReason.JUMP
    assert totals(released.accepted) == ["700"]


def test_a_new_generation_is_not_judged_against_the_old_devices_register() -> None:
    existing = [r(0, "1000"), r(30, "1012")]
    merge = merge_readings(METER, existing, [r(30, "3", generation=1), r(60, "5", generation=1)])

    assert merge.rejected == []
    assert totals(merge.sequence) == ["1000", "1012", "3", "5"]


# --- intervals ---------------------------------------------------------------------------------


def test_intervals_pair_consecutive_readings_of_one_generation_only() -> None:
    sequence = [r(0, "1000"), r(10, "1010"), r(30, "1012"), r(30, "3", 1), r(60, "5", 1)]

    pairs = intervals(sequence, 0)

    assert [(a.total, b.total) for a, b in pairs] == [
        (D("1000"), D("1010")),
        (D("1010"), D("1012")),
        (D("3"), D("5")),
    ]


def test_intervals_start_at_the_given_index() -> None:
    sequence = [r(0, "1"), r(10, "2"), r(20, "3")]
    assert [(a.total, b.total) for a, b in intervals(sequence, 1)] == [(D("2"), D("3"))]
    assert intervals(sequence, 2) == []


@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 1)), min_size=2, max_size=6).map(sorted),
    st.integers(0, 4),
)
def test_intervals_of_the_last_two_readings_follow_the_same_rule_as_longer_tails(
    steps: list[tuple[int, int]], start: int
) -> None:
    """The two-reading shortcut (the cursor and one new reading) gives what the general rule
    gives, including a generation change or a repeated time."""
    sequence = [
        r(minutes, str(100 + i), generation) for i, (minutes, generation) in enumerate(steps)
    ]
    expected = [
        (a, b)
        for a, b in zip(sequence[start:], sequence[start + 1 :], strict=False)
        if a.generation == b.generation and b.measured_at > a.measured_at
    ]
    assert intervals(sequence, start) == expected


# --- PeriodTotal: running-total rounding -------------------------------------------------------


def post_all(total: PeriodTotal) -> int:
    due = total.due_fen()
    total.posted_fen += due
    total.postings += 1 if due else 0
    return due


def test_many_tiny_costs_post_exactly_the_rounded_total() -> None:
    # 1 000 intervals of 0.01 kWh at 0.6537: 10 kWh, 6.537 → 6.54 (each alone would round to
    # 0.01, i.e. 10.00 in all).
    total = PeriodTotal(0, D(0), 0, 0)
    posted = 0
    for _ in range(1000):
        total.add(10_000, D("0.01") * D("0.6537"))  # 0.01 kWh in millionths
        posted += post_all(total)

    assert total.quantity == D("10")
    assert total.quantity_millionths == 10_000_000
    assert total.exact_cost == D("6.537")
    assert posted == 654


def test_rounding_is_half_up_at_half_a_fen() -> None:
    total = PeriodTotal(0, D("0.005"), 0, 0)
    assert total.due_fen() == 1
    assert PeriodTotal(0, D("0.0049999"), 0, 0).due_fen() == 0


def test_a_lower_exact_total_makes_the_due_amount_negative() -> None:
    total = PeriodTotal(10_000_000, D("6.537"), 654, 3)
    total.add(-2_000_000, D("-1.3074"))  # a re-priced interval takes 2 kWh out

    assert total.due_fen() == -131  # round(5.2296) = 5.23, posted 6.54


@settings(max_examples=60, deadline=None)
@given(
    costs=st.lists(st.integers(0, 10_000_000), min_size=1, max_size=60),
    posting_chance=st.floats(0.05, 1),
    seed=st.integers(0, 2**16),
)
def test_whenever_postings_happen_they_add_up_to_the_rounded_exact_total(
    costs: list[int], posting_chance: float, seed: int
) -> None:
    """Costs with up to 8 places, posted after a random subset of them (a batch boundary)."""
    rng = random.Random(seed)
    total = PeriodTotal(0, D(0), 0, 0)
    posted = 0
    for cost in costs:
        total.add(1_000_000, D(cost).scaleb(-8))
        if rng.random() < posting_chance:
            posted += post_all(total)
    posted += post_all(total)

    exact = sum((D(c).scaleb(-8) for c in costs), D(0))
    assert posted == int((exact * 100).to_integral_value(rounding="ROUND_HALF_UP"))


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(1, 120), st.integers(0, 800)), min_size=1, max_size=25),
    seed=st.integers(0, 2**16),
)
def test_merging_batches_in_any_order_builds_the_in_order_sequence(
    steps: list[tuple[int, int]], seed: int
) -> None:
    """Each batch is merged into the sequence built so far, as ingest does with its stored tail;
    duplicates across batches are recognised; the end result is the sorted stream."""
    stream, at, total = [], 0, D("9990")
    for gap, advance in steps:
        at += gap
        total = (total + D(advance).scaleb(-2)) % D(10000)
        stream.append(r(at, f"{total}"))
    rng = random.Random(seed)
    arrivals = stream + rng.sample(stream, k=rng.randint(0, len(stream)))
    rng.shuffle(arrivals)

    sequence: list[Reading] = []
    while arrivals:
        size = rng.randint(1, len(arrivals))
        batch, arrivals = arrivals[:size], arrivals[size:]
        by_key = {order_key(reading): reading for reading in batch}
        unique = [by_key[key] for key in sorted(by_key)]
        merge = merge_readings(METER, sequence, unique)
        assert merge.rejected == []
        sequence = merge.sequence

    assert sequence == stream


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 30), max_size=4, unique=True),
    st.lists(
        st.tuples(st.integers(1, 40), st.integers(0, 3000)), max_size=6, unique_by=lambda x: x[0]
    ),
    st.booleans(),
)
def test_appending_after_the_cursor_gives_what_the_general_walk_gives(
    stored: list[int], incoming: list[tuple[int, int]], released: bool
) -> None:
    from meterdesk.billing.model import _append, _walk  # the two paths of merge_readings

    existing = [r(minute, str(100 + minute)) for minute in sorted(stored)]
    last = existing[-1].measured_at if existing else T0 - timedelta(minutes=1)
    source = ReadingSource.RELEASED if released else ReadingSource.REALTIME
    candidates = [
        r(minute, str(total), source=source)
        for minute, total in sorted(incoming)
        if T0 + timedelta(minutes=minute) > last
    ]
    assert _append(METER, existing, candidates) == _walk(METER, existing, candidates)
