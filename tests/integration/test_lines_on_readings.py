"""Priced lines stored on the reading that ends their interval (``readings.line_*``, billing.lines)
behave like rows of ``charge_lines``: a late reading supersedes them, what reads lines reads them,
and the money is what a clean in-order run gives, on SQLite and PostgreSQL.

The account opens at 2026-11-02T00:00Z with an opening reading of 1000 on a flat price of 1 per
kWh unless a test says otherwise, so every fen deducted is a hundredth of a kWh used.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from builders import (
    ACTOR,
    T0,
    D,
    active_lines,
    check_books,
    deducted,
    flat_definition,
    make_meter,
    make_org,
    make_tariff,
    minutes,
    one_meter_account,
    open_account,
    quarantined,
    reading,
    wallet,
)
from sqlalchemy import func, select

from meterdesk.billing import accounts, corrections
from meterdesk.billing.ingest import Ingestor
from meterdesk.billing.tables import charge_lines, period_totals
from meterdesk.db.database import Database
from meterdesk.metering.tables import readings
from meterdesk.reports import room_detail, whatif
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration


def stores(db: Database, meter_id: int) -> dict[str, int]:
    """How many active lines of the meter are on readings and in charge_lines."""
    with db.read() as conn:
        on_readings = conn.execute(
            select(func.count()).where(
                readings.c.meter_id == meter_id, readings.c.line_active.is_(True)
            )
        ).scalar_one()
        in_table = conn.execute(
            select(func.count()).where(
                charge_lines.c.meter_id == meter_id, charge_lines.c.active.is_(True)
            )
        ).scalar_one()
    return {"readings": int(on_readings), "charge_lines": int(in_table)}


def exact_cost(db: Database, meter_id: int) -> Decimal:
    with db.read() as conn:
        costs = conn.execute(
            select(period_totals.c.exact_cost).where(period_totals.c.meter_id == meter_id)
        ).scalars()
        return sum((D(c) for c in costs), D(0))


def test_a_late_reading_supersedes_the_line_stored_on_the_reading_after_it(db: Database) -> None:
    setup = one_meter_account(db, price="1", credit="100", opening="1000")
    pipeline = Ingestor(db)
    pipeline.ingest(
        [
            reading(setup.meter_id, minutes(m), t)
            for m, t in ((60, "1010"), (120, "1020"), (180, "1030"))
        ]
    )
    assert stores(db, setup.meter_id) == {"readings": 3, "charge_lines": 0}

    report = pipeline.ingest([reading(setup.meter_id, minutes(90), "1014")])

    assert (report.late, report.accepted) == (1, 1)
    assert active_lines(db, setup.meter_id) == [
        (0, 60, D(10), D(10)),
        (60, 90, D(4), D(4)),
        (90, 120, D(6), D(6)),
        (120, 180, D(10), D(10)),
    ]
    assert stores(db, setup.meter_id) == {"readings": 1, "charge_lines": 3}
    assert exact_cost(db, setup.meter_id) == D(30)
    assert deducted(db, setup.account.account_id) == D("30.00")
    assert wallet(db, setup.account) == D("70.00")
    check_books(db)


def test_two_late_readings_in_one_batch_split_two_lines_on_readings(db: Database) -> None:
    setup = one_meter_account(db, price="1", credit="100", opening="1000")
    pipeline = Ingestor(db)
    pipeline.ingest(
        [
            reading(setup.meter_id, minutes(m), t)
            for m, t in ((60, "1010"), (120, "1020"), (180, "1030"), (240, "1040"))
        ]
    )

    report = pipeline.ingest(
        [
            reading(setup.meter_id, minutes(200), "1031"),
            reading(setup.meter_id, minutes(30), "1001"),
        ]
    )

    assert (report.late, report.accepted) == (1, 2)
    assert active_lines(db, setup.meter_id) == [
        (0, 30, D(1), D(1)),
        (30, 60, D(9), D(9)),
        (60, 120, D(10), D(10)),
        (120, 180, D(10), D(10)),
        (180, 200, D(1), D(1)),
        (200, 240, D(9), D(9)),
    ]
    assert deducted(db, setup.account.account_id) == D("40.00")
    check_books(db)

    # and again, now inside lines of charge_lines and a line still on a reading
    pipeline.ingest(
        [
            reading(setup.meter_id, minutes(210), "1035"),
            reading(setup.meter_id, minutes(45), "1005"),
        ]
    )
    assert [line[:2] for line in active_lines(db, setup.meter_id)] == [
        (0, 30),
        (30, 45),
        (45, 60),
        (60, 120),
        (120, 180),
        (180, 200),
        (200, 210),
        (210, 240),
    ]
    assert deducted(db, setup.account.account_id) == D("40.00")
    check_books(db)


def test_many_lines_on_readings_in_one_batch_and_many_superseded_at_once(db: Database) -> None:
    """Large enough for PostgreSQL's COPY (readings) and unnest UPDATE (line_active)."""
    setup = one_meter_account(db, price="1", credit="1000", opening="1000")
    pipeline = Ingestor(db)
    steps = [(minute, D(1000) + D(minute) / 100) for minute in range(1, 301)]
    report = pipeline.ingest([reading(setup.meter_id, minutes(m), t) for m, t in steps])
    assert report.accepted == 300
    assert stores(db, setup.meter_id) == {"readings": 300, "charge_lines": 0}
    assert deducted(db, setup.account.account_id) == D("3.00")

    late = pipeline.ingest([reading(setup.meter_id, minutes(0.5), "1000.005")])

    assert late.late == 1
    lines = active_lines(db, setup.meter_id)
    assert len(lines) == 301
    assert sum(q for *_, q, _ in lines) == D(3)
    assert stores(db, setup.meter_id) == {"readings": 0, "charge_lines": 301}
    assert exact_cost(db, setup.meter_id) == D(3)
    assert deducted(db, setup.account.account_id) == D("3.00")
    check_books(db)


def test_what_if_and_todays_usage_read_lines_on_readings(db: Database) -> None:
    setup = one_meter_account(db, price="1", credit="100", opening="1000")
    pipeline = Ingestor(db)
    pipeline.ingest(
        [
            reading(setup.meter_id, minutes(m), t)
            for m, t in ((60, "1010"), (120, "1020"), (180, "1030"))
        ]
    )
    pipeline.ingest([reading(setup.meter_id, minutes(90), "1014")])

    with db.read() as conn:
        found, billed = whatif.usages(conn, setup.meter_id, T0, minutes(24 * 60), False)
        view = room_detail.MeterView(
            setup.meter_id,
            "M1",
            "electricity",
            "single_phase",
            None,
            None,
            "unknown",
            None,
            None,
            None,
            None,
            {},
        )
        room_detail.add_usage(conn, [view], T0, minutes(24 * 60))

    assert [(u.start, u.end, u.total) for u in found] == [
        (minutes(0), minutes(60), D(10)),
        (minutes(60), minutes(90), D(4)),
        (minutes(90), minutes(120), D(6)),
        (minutes(120), minutes(180), D(10)),
    ]
    assert billed == D(30)
    assert (view.today_quantity, view.today_cost) == (D(30), D(30))


def test_a_late_reading_of_the_old_device_supersedes_its_lines_on_readings(db: Database) -> None:
    setup = one_meter_account(db, price="1", credit="100", opening="1000")
    pipeline = Ingestor(db)
    pipeline.ingest(
        [reading(setup.meter_id, minutes(m), t) for m, t in ((60, "1010"), (120, "1020"))]
    )
    corrections.replace_meter(
        db,
        organisation_id=setup.org.id,
        replacement=corrections.Replacement(setup.meter_id, minutes(150), D("1025"), D("3")),
        actor="fitter",
        ingestor=pipeline,
    )
    pipeline.ingest([reading(setup.meter_id, minutes(180), "5")])

    report = pipeline.ingest([reading(setup.meter_id, minutes(90), "1014")])

    assert (report.late, report.accepted) == (1, 1)
    assert active_lines(db, setup.meter_id) == [
        (0, 60, D(10), D(10)),
        (60, 90, D(4), D(4)),
        (90, 120, D(6), D(6)),
        (120, 150, D(5), D(5)),
        (150, 180, D(2), D(2)),
    ]
    assert deducted(db, setup.account.account_id) == D("27.00")
    check_books(db)


def test_a_late_reading_between_a_closed_and_a_new_account_moves_neither(
    db: Database, clock: FakeClock
) -> None:
    org = make_org(db)
    tariff = make_tariff(db, org, definition=flat_definition("1"))
    meter = make_meter(db, org)
    first = open_account(db, org, "A-1", [(meter, tariff, "1000")], credit="100")
    pipeline = Ingestor(db)
    pipeline.ingest([reading(meter, minutes(60), "1010")])
    clock.advance(timedelta(minutes=120))
    accounts.close_account(
        db,
        organisation_id=org.id,
        number="A-1",
        final_readings=[accounts.FinalReading(meter, D("1020"))],
        refund_method="cash",
        actor=ACTOR,
        idempotency_key="close-1",
        ingestor=pipeline,
    )
    clock.advance(timedelta(minutes=60))
    second = open_account(
        db, org, "A-2", [(meter, tariff, "1030")], credit="100", ingestor=pipeline
    )
    pipeline.ingest([reading(meter, minutes(240), "1040")])
    before = (deducted(db, first.account_id), deducted(db, second.account_id))

    report = pipeline.ingest(
        [reading(meter, minutes(150), "1025"), reading(meter, minutes(210), "1036")]
    )
    settled = pipeline.ingest([reading(meter, minutes(30), "1004")])

    assert (report.late, report.accepted, settled.quarantined) == (1, 2, 1)
    assert before == (D("20.00"), D("10.00"))
    assert (deducted(db, first.account_id), deducted(db, second.account_id)) == before
    assert active_lines(db, meter) == [
        (0, 60, D(10), D(10)),
        (60, 120, D(10), D(10)),
        (180, 210, D(6), D(6)),
        (210, 240, D(4), D(4)),
    ]
    check_books(db)


def test_releasing_a_quarantined_jump_supersedes_the_lines_on_readings_after_it(
    db: Database,
) -> None:
    setup = one_meter_account(db, price="1", credit="500", opening="1000", max_rate="100")
    pipeline = Ingestor(db)
    pipeline.ingest([reading(setup.meter_id, minutes(60), "1010")])
    spike = pipeline.ingest([reading(setup.meter_id, minutes(90), "1200")])  # 380 kWh/h
    pipeline.ingest([reading(setup.meter_id, minutes(300), "1200")])  # 47.5 kWh/h since 60
    pipeline.ingest([reading(setup.meter_id, minutes(360), "1210")])
    assert spike.quarantined == 1
    assert stores(db, setup.meter_id) == {"readings": 3, "charge_lines": 0}
    [item] = quarantined(db, setup.org)

    report = corrections.release(
        db,
        organisation_id=setup.org.id,
        quarantine_id=item["id"],
        actor="checker",
        ingestor=pipeline,
    )

    assert (report.late, report.accepted) == (1, 1)
    assert active_lines(db, setup.meter_id) == [
        (0, 60, D(10), D(10)),
        (60, 90, D(190), D(190)),
        (300, 360, D(10), D(10)),
    ]
    assert deducted(db, setup.account.account_id) == D("210.00")
    check_books(db)
