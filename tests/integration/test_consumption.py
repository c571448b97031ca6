"""From readings to money, through the real pipeline and database: rollover, meter replacement,
duplicates, reordering and late data, quarantine and its release by an operator, running-total
rounding, and the billing month in local time. Every figure is worked out in the comments.

The account opens at the ``clock`` fixture's instant, 2026-11-02T00:00Z (08:00 in Shanghai, a
Monday), with an opening reading of 1000 unless a test says otherwise.
"""

from __future__ import annotations

import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from builders import (
    D,
    Setup,
    deducted,
    flat_definition,
    local,
    make_meter,
    make_org,
    make_tariff,
    minutes,
    one_meter_account,
    open_account,
    owed,
    posted_by_period,
    quarantined,
    reading,
    row_counts,
    stored_readings,
    tou_definition,
    tou_tier_definition,
    wallet,
)
from sqlalchemy import Engine

from meterdesk.billing import corrections
from meterdesk.billing.ingest import Ingestor
from meterdesk.db.database import Database
from meterdesk.shared.errors import ConflictError
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration


def ingest(db: Database, setup: Setup, *steps: tuple[float, str]) -> None:
    """Each (minutes after T0, register) in its own batch, in the order given."""
    pipeline = Ingestor(db)
    for at, total in steps:
        pipeline.ingest([reading(setup.meter_id, minutes(at), total)])


# --- rollover and replacement ------------------------------------------------------------------


def test_rollover_counts_as_consumption_not_negative_usage(db: Database) -> None:
    setup = one_meter_account(db, price="1", opening="9990", modulus="10000")

    ingest(db, setup, (60, "9998.5"), (120, "15"))  # 8.5, then 1.5 + 15 across the wrap

    assert deducted(db, setup.account.account_id) == D("25.00")
    assert wallet(db, setup.account) == D("75.00")
    assert quarantined(db, setup.org) == []


def test_replacement_bills_the_old_meter_to_its_final_reading_and_nothing_across_it(
    db: Database,
) -> None:
    setup = one_meter_account(db, price="1", opening="1000")
    pipeline = Ingestor(db)
    pipeline.ingest([reading(setup.meter_id, minutes(60), "1010")])

    generation = corrections.replace_meter(
        db,
        organisation_id=setup.org.id,
        replacement=corrections.Replacement(setup.meter_id, minutes(90), D("1012"), D("3")),
        actor="fitter",
        ingestor=pipeline,
    )
    pipeline.ingest([reading(setup.meter_id, minutes(120), "5")])

    # old device 1000 → 1010 → 1012 (12), new device 3 → 5 (2); never 1012 → 3
    assert generation == 1
    assert deducted(db, setup.account.account_id) == D("14.00")
    assert [(row[1], row[3]) for row in stored_readings(db, setup.meter_id)] == [
        (0, D("1000")),
        (0, D("1010")),
        (0, D("1012")),
        (1, D("3")),
        (1, D("5")),
    ]
    assert quarantined(db, setup.org) == []


def test_a_late_reading_of_the_old_device_after_replacement_bills_nothing_more(
    db: Database,
) -> None:
    setup = one_meter_account(db, price="1")
    pipeline = Ingestor(db)
    pipeline.ingest([reading(setup.meter_id, minutes(60), "1010")])
    corrections.replace_meter(
        db,
        organisation_id=setup.org.id,
        replacement=corrections.Replacement(setup.meter_id, minutes(90), D("1012"), D("3")),
        actor="fitter",
        ingestor=pipeline,
    )
    pipeline.ingest([reading(setup.meter_id, minutes(120), "5")])

    report = pipeline.ingest(
        [reading(setup.meter_id, minutes(75), "1011"), reading(setup.meter_id, minutes(60), "1010")]
    )

    assert (report.accepted, report.duplicates, report.quarantined) == (1, 1, 0)
    assert deducted(db, setup.account.account_id) == D("14.00")


# --- duplicates, reordering, late data ---------------------------------------------------------


def test_a_resent_batch_is_recognised_as_duplicates_and_moves_no_money(db: Database) -> None:
    setup = one_meter_account(db, price="1")
    batch = [
        reading(setup.meter_id, minutes(m), total) for m, total in ((60, "1004"), (90, "1007"))
    ]
    pipeline = Ingestor(db)
    pipeline.ingest(batch)
    before = row_counts(db)

    report = pipeline.ingest(batch)

    assert (report.accepted, report.duplicates, report.transfers) == (0, 2, 0)
    assert row_counts(db) == before
    assert wallet(db, setup.account) == D("93.00")


def test_duplicates_inside_one_batch_count_once(db: Database) -> None:
    setup = one_meter_account(db, price="1")
    twice = [reading(setup.meter_id, minutes(60), "1004")] * 2

    report = Ingestor(db).ingest(twice)

    assert (report.accepted, report.duplicates) == (1, 1)
    assert deducted(db, setup.account.account_id) == D("4.00")


def test_readings_arriving_in_reverse_order_bill_the_same_as_in_order(db: Database) -> None:
    """Two meters with the same stream under a time-of-use tariff with monthly tiers: one gets
    it in order, one newest first, one reading per batch."""
    org = make_org(db)
    tariff = make_tariff(db, org, "tou", tou_tier_definition())
    first, second = make_meter(db, org, "M1"), make_meter(db, org, "M2")
    in_order = open_account(db, org, "A-1", [(first, tariff, "1000")])
    reversed_ = open_account(db, org, "A-2", [(second, tariff, "1000")])
    # 08:30 +4, 09:00 +4, 09:30 +6 in the flat band (08-10), then 10:30 +2
    steps = [(30, "1004"), (60, "1008"), (90, "1014"), (150, "1016")]
    pipeline = Ingestor(db)
    for at, total in steps:
        pipeline.ingest([reading(first, minutes(at), total)])
    for at, total in reversed(steps):
        pipeline.ingest([reading(second, minutes(at), total)])

    # Tiers at 5 and 12 kWh add 0, 0.05, 0.30. The last 2 kWh (09:30-10:30) are 1 flat, 1 peak.
    # 5 × 0.68 + 7 × 0.73 + 3 × 0.98 (flat, top tier) + 1 × 1.35 (peak, top tier) = 12.80
    assert deducted(db, in_order.account_id) == D("12.80")
    assert deducted(db, reversed_.account_id) == D("12.80")
    assert wallet(db, reversed_) == wallet(db, in_order) == D("87.20")


def test_a_late_reading_reprices_the_interval_it_lands_in_to_the_in_order_result(
    db: Database,
) -> None:
    """08:00 opening 1000; 15:00 reading 1101 arrives first; the 10:00 reading 1100 arrives late.

    First pricing spreads 101 kWh over 2 h flat and 5 h peak: 28.857143 × 0.68 + 72.142857 ×
    1.05 = 95.37285709 → 95.37. With the 10:00 reading: 100 × 0.68 + 1 × 1.05 = 69.05, so
    26.32 goes back to the wallet."""
    setup = one_meter_account(db, definition=tou_definition(), credit="200")
    pipeline = Ingestor(db)

    first = pipeline.ingest([reading(setup.meter_id, minutes(420), "1101")])
    late = pipeline.ingest([reading(setup.meter_id, minutes(120), "1100")])

    assert first.deducted_fen == 9537
    assert (late.late, late.accepted, late.returned_fen) == (1, 1, 2632)
    assert deducted(db, setup.account.account_id) == D("69.05")
    assert wallet(db, setup.account) == D("130.95")


def test_consumption_before_the_opening_reading_is_stored_but_never_billed(db: Database) -> None:
    setup = one_meter_account(db, price="1")

    report = Ingestor(db).ingest([reading(setup.meter_id, minutes(-60), "990")])

    assert report.accepted == 1
    assert deducted(db, setup.account.account_id) == D("0.00")
    assert len(stored_readings(db, setup.meter_id)) == 2


def test_a_meter_with_its_own_tou_registers_is_billed_from_them(db: Database) -> None:
    """09:00-10:00 is flat by the clock (0.68), but the meter's registers say 6 kWh valley
    (0.32) and 4 flat: 6 × 0.32 + 4 × 0.68 = 4.64, where time alone would give 6.80. The first
    interval (from the opening reading, which has no registers) is spread by time: 6.80."""
    org = make_org(db)
    tariff = make_tariff(db, org, "tou", tou_definition())
    meter = make_meter(db, org, "M1", bands=True)
    account = open_account(db, org, "A-1", [(meter, tariff, "1000")])
    pipeline = Ingestor(db)

    pipeline.ingest([reading(meter, minutes(60), "1010", {"valley": "1010"})])
    pipeline.ingest([reading(meter, minutes(120), "1020", {"valley": "1016", "flat": "4"})])

    assert deducted(db, account.account_id) == D("11.44")


# --- quarantine --------------------------------------------------------------------------------


def test_a_decreasing_register_is_quarantined_with_its_reason_and_listed(db: Database) -> None:
    setup = one_meter_account(db, price="1")

    report = Ingestor(db).ingest([reading(setup.meter_id, minutes(60), "20")])

    assert (report.accepted, report.quarantined) == (0, 1)
    [item] = quarantined(db, setup.org)
    assert item["reason_code"] == "decreased"
    assert re.search(r"went down from 1000(\.0+)? to 20 and is not a rollover", item["reason"])
    assert item["meter_number"] == "M1"
    assert item["measured_at"] == minutes(60)
    assert deducted(db, setup.account.account_id) == D("0.00")


def test_an_implausible_jump_is_quarantined_with_its_reason(db: Database) -> None:
    setup = one_meter_account(db, price="1")  # at most 500 kWh per hour

    Ingestor(db).ingest([reading(setup.meter_id, minutes(60), "1501")])

    [item] = quarantined(db, setup.org)
    assert item["reason_code"] == "jump"
    assert "exceeds the meter's maximum of 500" in item["reason"]
    assert deducted(db, setup.account.account_id) == D("0.00")


def test_the_same_bad_reading_sent_twice_is_quarantined_once(db: Database) -> None:
    setup = one_meter_account(db, price="1")
    pipeline = Ingestor(db)

    pipeline.ingest([reading(setup.meter_id, minutes(60), "20")])
    pipeline.ingest([reading(setup.meter_id, minutes(60), "20")])

    assert len(quarantined(db, setup.org)) == 1


def test_releasing_a_jump_bills_it_and_accepts_the_readings_that_followed(db: Database) -> None:
    setup = one_meter_account(db, price="1", credit="100")
    pipeline = Ingestor(db)
    pipeline.ingest(
        [
            reading(setup.meter_id, minutes(60), "1010"),
            reading(setup.meter_id, minutes(120), "3010"),  # +2000 in an hour: a jump
            reading(setup.meter_id, minutes(180), "3015"),  # judged against 1010: a jump too
        ]
    )
    jump, follower = quarantined(db, setup.org)

    report = corrections.release(
        db, organisation_id=setup.org.id, quarantine_id=jump["id"], actor="checker"
    )

    assert report.accepted == 2
    assert quarantined(db, setup.org) == []
    released = quarantined(db, setup.org, "released")
    assert {i["id"] for i in released} == {jump["id"], follower["id"]}
    # 10 + 2000 + 5 kWh at 1.00: the wallet pays 100, the rest is owed
    assert deducted(db, setup.account.account_id) == D("2015.00")
    assert (wallet(db, setup.account), owed(db, setup.account)) == (D("0.00"), D("1915.00"))


def test_a_jump_contradicted_by_a_later_accepted_reading_cannot_be_released(
    db: Database,
) -> None:
    """1005, then a 5000 spike (quarantined as a jump), then 1010 (accepted: it fits 1005).
    Releasing the spike skips every check (ReadingSource.RELEASED in billing.model.merge_readings)
    and corrections.release only looks for later readings when the reason is "decreased", so
    the spike is placed before 1010 and 5000 → 1010 is priced as a rollover at the 1 000 000
    modulus: 3 995 + 996 010 kWh, 1 000 000.00 billed. It should be refused like a decrease
    that later readings contradict, changing nothing."""
    setup = one_meter_account(db, price="1", credit="100")
    pipeline = Ingestor(db)
    pipeline.ingest(
        [
            reading(setup.meter_id, minutes(60), "1005"),
            reading(setup.meter_id, minutes(120), "5000"),
            reading(setup.meter_id, minutes(180), "1010"),
        ]
    )
    [spike] = quarantined(db, setup.org)
    assert spike["reason_code"] == "jump"

    with pytest.raises(ConflictError):
        corrections.release(
            db, organisation_id=setup.org.id, quarantine_id=spike["id"], actor="checker"
        )

    assert deducted(db, setup.account.account_id) == D("10.00")
    assert [i["id"] for i in quarantined(db, setup.org)] == [spike["id"]]


def test_releasing_a_decrease_starts_a_new_generation_billing_nothing_across_it(
    db: Database,
) -> None:
    setup = one_meter_account(db, price="1")
    pipeline = Ingestor(db)
    pipeline.ingest(
        [
            reading(setup.meter_id, minutes(60), "1010"),
            reading(setup.meter_id, minutes(120), "20"),  # the device was reset
            reading(setup.meter_id, minutes(180), "25"),
        ]
    )
    reset = quarantined(db, setup.org)[0]

    corrections.release(
        db,
        organisation_id=setup.org.id,
        quarantine_id=reset["id"],
        actor="checker",
        ingestor=pipeline,
    )
    pipeline.ingest([reading(setup.meter_id, minutes(240), "30")])

    # 1000 → 1010 (10), then 20 → 25 → 30 (10): never 1010 → 20
    assert deducted(db, setup.account.account_id) == D("20.00")
    generations = [(row[1], row[3]) for row in stored_readings(db, setup.meter_id)]
    assert generations[2:] == [(1, D("20")), (1, D("25")), (1, D("30"))]
    assert quarantined(db, setup.org) == []


def test_a_decrease_followed_by_readings_of_the_old_register_cannot_be_a_reset(
    db: Database,
) -> None:
    setup = one_meter_account(db, price="1")
    pipeline = Ingestor(db)
    pipeline.ingest(
        [
            reading(setup.meter_id, minutes(60), "20"),  # a glitch
            reading(setup.meter_id, minutes(120), "1005"),  # the old register goes on
        ]
    )
    glitch = quarantined(db, setup.org)[0]

    with pytest.raises(ConflictError, match="discard it instead"):
        corrections.release(
            db, organisation_id=setup.org.id, quarantine_id=glitch["id"], actor="checker"
        )

    corrections.discard(db, organisation_id=setup.org.id, quarantine_id=glitch["id"], actor="x")
    assert [i["id"] for i in quarantined(db, setup.org, "discarded")] == [glitch["id"]]
    assert deducted(db, setup.account.account_id) == D("5.00")


@pytest.mark.parametrize(
    ("late_total", "reason"),
    [("1020", "inconsistent_with_later"), ("1007", "conflicting_duplicate")],
)
def test_inconsistent_or_conflicting_readings_can_only_be_discarded(
    db: Database, late_total: str, reason: str
) -> None:
    setup = one_meter_account(db, price="1")
    pipeline = Ingestor(db)
    pipeline.ingest(
        [
            reading(setup.meter_id, minutes(60), "1005"),
            reading(setup.meter_id, minutes(120), "1010"),
        ]
    )
    # 1020 at 90 minutes is above the accepted 1010 at 120; 1007 at 60 contradicts 1005
    at = 90 if reason == "inconsistent_with_later" else 60
    pipeline.ingest([reading(setup.meter_id, minutes(at), late_total)])
    [item] = quarantined(db, setup.org)
    assert item["reason_code"] == reason

    with pytest.raises(ConflictError, match="only discarded"):
        corrections.release(db, organisation_id=setup.org.id, quarantine_id=item["id"], actor="x")
    corrections.discard(db, organisation_id=setup.org.id, quarantine_id=item["id"], actor="x")

    assert quarantined(db, setup.org) == []
    assert [i["id"] for i in quarantined(db, setup.org, "discarded")] == [item["id"]]
    assert deducted(db, setup.account.account_id) == D("10.00")
    with pytest.raises(ConflictError, match="already discarded"):
        corrections.discard(db, organisation_id=setup.org.id, quarantine_id=item["id"], actor="x")


def test_a_released_item_cannot_be_released_again(db: Database) -> None:
    setup = one_meter_account(db, price="1")
    Ingestor(db).ingest([reading(setup.meter_id, minutes(60), "1600")])
    [jump] = quarantined(db, setup.org)
    corrections.release(db, organisation_id=setup.org.id, quarantine_id=jump["id"], actor="x")

    with pytest.raises(ConflictError, match="already released"):
        corrections.release(db, organisation_id=setup.org.id, quarantine_id=jump["id"], actor="x")
    assert deducted(db, setup.account.account_id) == D("600.00")


def test_readings_of_an_unknown_meter_are_quarantined_without_an_organisation(
    db: Database,
) -> None:
    setup = one_meter_account(db, price="1")

    report = Ingestor(db).ingest([reading(setup.meter_id + 999, minutes(60), "5")])

    assert report.quarantined == 1
    assert quarantined(db, setup.org) == []  # no organisation can see (or bill) it
    assert row_counts(db)["quarantine"] == 1


# --- running-total rounding --------------------------------------------------------------------


def test_many_tiny_intervals_add_up_to_the_rounded_month_total_per_meter(db: Database) -> None:
    """120 readings, 0.01 kWh apart, at 0.6537/kWh, one batch each: 1.2 kWh → 0.78444 → 0.78
    for the month (each interval alone, 0.006537, would round to 0.01: 1.20 in all)."""
    setup = one_meter_account(db, price="0.6537", opening="1000")
    pipeline = Ingestor(db)

    for index in range(1, 121):
        pipeline.ingest([reading(setup.meter_id, minutes(index), D("1000") + D("0.01") * index)])

    assert deducted(db, setup.account.account_id) == D("0.78")
    assert posted_by_period(db, setup.meter_id) == {"2026-11": D("0.78")}
    assert wallet(db, setup.account) == D("99.22")


def test_each_meter_of_an_account_is_rounded_on_its_own(db: Database) -> None:
    """Two meters, 0.5 kWh each at 0.01/kWh: 0.005 rounds half up to 0.01 per meter, 0.02 in
    all (rounding the account's 0.01 exact total would give 0.01)."""
    org = make_org(db)
    tariff = make_tariff(db, org, "cheap", flat_definition("0.01"))
    first, second = make_meter(db, org, "M1"), make_meter(db, org, "M2")
    account = open_account(db, org, "A-1", [(first, tariff, "0"), (second, tariff, "0")])

    Ingestor(db).ingest([reading(first, minutes(60), "0.5"), reading(second, minutes(60), "0.5")])

    assert posted_by_period(db, first) == posted_by_period(db, second) == {"2026-11": D("0.01")}
    assert deducted(db, account.account_id) == D("0.02")


# --- billing month in local time ---------------------------------------------------------------


def test_an_interval_across_local_midnight_of_the_first_is_split_between_the_months(
    engine: Engine,
) -> None:
    """Shanghai: opening 1000 at 30 Nov 20:00, 1003 at 23:00, 1005 at 1 Dec 01:00 (still 30 Nov
    in UTC). The last 2 kWh are split 1 + 1 at local midnight: November 4 kWh × 0.6537 = 2.6148
    → 2.61, December 1 kWh → 0.6537 → 0.65. Each month is rounded and posted on its own: 3.26,
    not round(3.2685) = 3.27."""
    clock = FakeClock(local("2026-11-30 20:00"))
    db = Database(engine=engine, clock=clock)
    setup = one_meter_account(db, price="0.6537", opening="1000")
    pipeline = Ingestor(db)

    pipeline.ingest(
        [
            reading(setup.meter_id, local("2026-11-30 23:00"), "1003"),
            reading(setup.meter_id, local("2026-12-01 01:00"), "1005"),
        ]
    )

    assert local("2026-12-01 01:00").date() == local("2026-11-30 20:00").date()  # same UTC day
    assert posted_by_period(db, setup.meter_id) == {"2026-11": D("2.61"), "2026-12": D("0.65")}
    assert deducted(db, setup.account.account_id, "2026-11") == D("2.61")
    assert deducted(db, setup.account.account_id, "2026-12") == D("0.65")
    assert wallet(db, setup.account) == D("96.74")


def test_a_late_november_reading_reprices_both_months_to_the_in_order_result(
    engine: Engine,
) -> None:
    """The 01:00 reading (1005) arrives first: 5 kWh over 5 h, November 4 (2.61), December 1
    (0.65). Then 1004 at 23:00 arrives: November 4 + 0.5 = 4.5 kWh → 2.94165 → 2.94 (0.33 more),
    December 0.5 kWh → 0.32685 → 0.33 (0.32 back)."""
    clock = FakeClock(local("2026-11-30 20:00"))
    db = Database(engine=engine, clock=clock)
    setup = one_meter_account(db, price="0.6537", opening="1000")
    pipeline = Ingestor(db)

    pipeline.ingest([reading(setup.meter_id, local("2026-12-01 01:00"), "1005")])
    assert posted_by_period(db, setup.meter_id) == {"2026-11": D("2.61"), "2026-12": D("0.65")}
    clock.advance(timedelta(minutes=5))
    late = pipeline.ingest([reading(setup.meter_id, local("2026-11-30 23:00"), "1004")])

    assert (late.deducted_fen, late.returned_fen) == (33, 32)
    assert posted_by_period(db, setup.meter_id) == {"2026-11": D("2.94"), "2026-12": D("0.33")}
    assert wallet(db, setup.account) == D("96.73")


def test_the_billing_month_follows_the_sites_own_zone(engine: Engine) -> None:
    """A site in New York: local midnight of 1 November 2026 is 04:00Z (EDT, the clocks go back
    at 02:00 that night). 2 kWh from 23:00 to 01:00 local are split 1 + 1 between October and
    November, although both readings are on 1 November in UTC and in Shanghai."""
    new_york = ZoneInfo("America/New_York")
    clock = FakeClock(local("2026-10-31 20:00", new_york))
    db = Database(engine=engine, clock=clock)
    org = make_org(db, timezone="America/New_York")
    tariff = make_tariff(db, org, "flat", flat_definition("1"))
    meter = make_meter(db, org)
    account = open_account(db, org, "A-1", [(meter, tariff, "1000")])

    Ingestor(db).ingest(
        [
            reading(meter, local("2026-10-31 23:00", new_york), "1003"),
            reading(meter, local("2026-11-01 01:00", new_york), "1005"),
        ]
    )

    assert posted_by_period(db, meter) == {"2026-10": D("4.00"), "2026-11": D("1.00")}
    assert deducted(db, account.account_id) == D("5.00")
