"""Changing a meter's tariff in an open account (改电价): the switch is at the meter's latest
accepted reading, so the past is never re-priced, no interval is billed by both tariffs or by
none, a late reading before the switch is priced by the old tariff, the month's tier use carries
on across the switch, and a long-lived ingest pipeline sees the change at once."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import ROUND_HALF_UP
from typing import Any

import pytest
from builders import (
    ACTOR,
    D,
    Org,
    Setup,
    active_lines,
    deducted,
    flat_definition,
    make_meter,
    make_org,
    make_tariff,
    minutes,
    one_meter_account,
    open_account,
    posted_by_period,
    reading,
    wallet,
)
from sqlalchemy import select

from meterdesk.audit.tables import audit_log
from meterdesk.billing import accounts, tariff_change
from meterdesk.billing.ingest import Ingestor
from meterdesk.billing.tables import meter_assignments, period_totals, tariff_changes
from meterdesk.db import counters
from meterdesk.db.database import Database
from meterdesk.shared.errors import (
    ConflictError,
    IdempotencyConflictError,
    NotFoundError,
    ValidationError,
)
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration


def price_tiers(first: str, second: str, bound: str = "10") -> dict[str, Any]:
    """A monthly tiered tariff: ``first`` per kWh up to ``bound`` kWh in the month, then ``second``."""
    return {
        "utility": "electricity",
        "versions": [
            {
                "effective_from": "2026-01-01",
                "prices": {},
                "tiers": {
                    "period": "month",
                    "mode": "price",
                    "blocks": [
                        {"up_to": bound, "price": first},
                        {"up_to": None, "price": second},
                    ],
                },
            }
        ],
    }


def change(db: Database, setup: Setup, tariff_id: int, key: str = "change-1") -> Any:
    return tariff_change.change_tariff(
        db,
        organisation_id=setup.org.id,
        account_id=setup.account.account_id,
        meter_id=setup.meter_id,
        tariff_id=tariff_id,
        actor=ACTOR,
        idempotency_key=key,
    )


def priced_lines(db: Database, meter_id: int) -> list[tuple[float, float, D, D]]:
    """(interval start, interval end in minutes after T0, quantity, unit price) of active lines."""
    return active_lines(db, meter_id, money="unit_price")


def assignments(db: Database, meter_id: int) -> list[tuple[int, Any, Any]]:
    with db.read() as conn:
        return [
            (int(t), s, e)
            for t, s, e in conn.execute(
                select(
                    meter_assignments.c.tariff_id,
                    meter_assignments.c.start_at,
                    meter_assignments.c.end_at,
                )
                .where(meter_assignments.c.meter_id == meter_id)
                .order_by(meter_assignments.c.id)
            )
        ]


# --- exactness across the switch --------------------------------------------------------------


def test_the_new_tariff_prices_only_what_follows_the_latest_reading(db: Database) -> None:
    setup = one_meter_account(db, price="1", credit="100", opening="1000")
    dearer = make_tariff(db, setup.org, "dearer", flat_definition("2"))
    pipeline = Ingestor(db)  # long-lived: it has cached the old assignment
    pipeline.ingest([reading(setup.meter_id, minutes(60), "1010")])

    done = change(db, setup, dearer)
    pipeline.ingest([reading(setup.meter_id, minutes(120), "1015")])

    assert (done.changed, done.effective_at, done.previous_tariff, done.tariff) == (
        True,
        minutes(60),
        "flat",
        "dearer",
    )
    assert priced_lines(db, setup.meter_id) == [(0, 60, D(10), D(1)), (60, 120, D(5), D(2))]
    assert wallet(db, setup.account) == D("80.00")  # 100 − 10 × 1 − 5 × 2
    assert [(t, s, e) for t, s, e in assignments(db, setup.meter_id)] == [
        (setup.tariff_id, minutes(0), minutes(60)),
        (dearer, minutes(60), None),
    ]


def test_late_readings_before_and_after_the_switch_are_priced_by_their_own_tariff(
    db: Database,
) -> None:
    setup = one_meter_account(db, price="1", credit="100", opening="1000")
    dearer = make_tariff(db, setup.org, "dearer", flat_definition("2"))
    pipeline = Ingestor(db)
    pipeline.ingest([reading(setup.meter_id, minutes(60), "1010")])
    change(db, setup, dearer)
    pipeline.ingest([reading(setup.meter_id, minutes(120), "1015")])

    report = pipeline.ingest(
        [reading(setup.meter_id, minutes(30), "1004"), reading(setup.meter_id, minutes(90), "1012")]
    )

    assert report.late == 1 and report.accepted == 2
    assert priced_lines(db, setup.meter_id) == [
        (0, 30, D(4), D(1)),
        (30, 60, D(6), D(1)),  # before the switch: the old price, though it came after it
        (60, 90, D(2), D(2)),
        (90, 120, D(3), D(2)),
    ]
    assert wallet(db, setup.account) == D("80.00")  # late data split intervals, moved nothing
    assert deducted(db, setup.account.account_id) == D("20.00")


def test_without_a_reading_since_opening_the_switch_is_at_the_opening_reading(
    db: Database,
) -> None:
    setup = one_meter_account(db, price="1", credit="100", opening="1000")
    dearer = make_tariff(db, setup.org, "dearer", flat_definition("2"))

    done = change(db, setup, dearer)
    Ingestor(db).ingest([reading(setup.meter_id, minutes(60), "1010")])

    assert done.effective_at == minutes(0)
    assert priced_lines(db, setup.meter_id) == [(0, 60, D(10), D(2))]
    assert wallet(db, setup.account) == D("80.00")


def test_the_months_tier_use_carries_on_across_the_switch(db: Database) -> None:
    """8 kWh under the old tariff count toward the new tariff's first block of 10 kWh: of the
    next 4 kWh, 2 are in block 1 and 2 in block 2 (not 4 in block 1, as a fresh count would)."""
    setup = one_meter_account(db, credit="100", opening="1000", definition=price_tiers("1", "3"))
    dearer = make_tariff(db, setup.org, "dearer tiers", price_tiers("1.5", "4"))
    pipeline = Ingestor(db)
    pipeline.ingest([reading(setup.meter_id, minutes(60), "1008")])
    change(db, setup, dearer)

    pipeline.ingest([reading(setup.meter_id, minutes(120), "1012")])

    assert priced_lines(db, setup.meter_id) == [
        (0, 60, D(8), D(1)),
        (60, 120, D(2), D("1.5")),
        (60, 120, D(2), D(4)),
    ]
    assert wallet(db, setup.account) == D("81.00")  # 100 − 8 − 2 × 1.5 − 2 × 4
    with db.read() as conn:
        totals = conn.execute(
            select(period_totals.c.period_key, period_totals.c.quantity).where(
                period_totals.c.meter_id == setup.meter_id
            )
        ).all()
    assert [(key, D(q)) for key, q in totals] == [("2026-11", D(12))]


def test_running_total_rounding_stays_exact_to_the_fen_across_the_switch(db: Database) -> None:
    setup = one_meter_account(db, price="0.6537", credit="100", opening="1000")
    other = make_tariff(db, setup.org, "other", flat_definition("0.7123"))
    pipeline = Ingestor(db)
    before = [("1000.0333", 15), ("1000.0701", 30), ("1000.1111", 45)]
    after = [("1000.1499", 60), ("1000.1907", 75), ("1000.2333", 90)]
    for total, at in before:
        pipeline.ingest([reading(setup.meter_id, minutes(at), total)])
    change(db, setup, other)
    for total, at in after:
        pipeline.ingest([reading(setup.meter_id, minutes(at), total)])

    exact = (D("1000.1111") - D(1000)) * D("0.6537") + (D("1000.2333") - D("1000.1111")) * D(
        "0.7123"
    )
    month_total = exact.quantize(D("0.01"), rounding=ROUND_HALF_UP)
    assert posted_by_period(db, setup.meter_id) == {"2026-11": month_total}
    assert wallet(db, setup.account) == D(100) - month_total


# --- what is refused, what is repeated ---------------------------------------------------------


def test_the_same_key_repeats_the_first_answer_and_changes_once(db: Database) -> None:
    setup = one_meter_account(db, price="1")
    dearer = make_tariff(db, setup.org, "dearer", flat_definition("2"))
    first = change(db, setup, dearer)
    Ingestor(db).ingest([reading(setup.meter_id, minutes(60), "1010")])

    again = change(db, setup, dearer)

    assert (again.replayed, again.change_id, again.effective_at) == (
        True,
        first.change_id,
        first.effective_at,
    )
    assert len(assignments(db, setup.meter_id)) == 2
    with pytest.raises(IdempotencyConflictError, match="already used"):
        change(db, setup, setup.tariff_id)


def test_changing_to_the_same_tariff_changes_nothing_and_says_so(db: Database) -> None:
    setup = one_meter_account(db, price="1")
    version = _counter(db)

    done = change(db, setup, setup.tariff_id)

    assert (done.changed, done.change_id) == (False, None)
    assert "already billed by 'flat'; nothing changed" in done.message
    assert len(assignments(db, setup.meter_id)) == 1
    assert _counter(db) == version
    with db.read() as conn:
        assert conn.execute(select(tariff_changes)).all() == []


def _counter(db: Database) -> int:
    with db.read() as conn:
        return counters.read(conn)


def test_a_tariff_of_another_utility_or_organisation_is_refused_and_changes_nothing(
    db: Database,
) -> None:
    setup = one_meter_account(db, price="1")
    water = make_tariff(db, setup.org, "water", flat_definition("3.5", utility="water"))
    other_org = make_org(db, "Org B")
    foreign = make_tariff(db, other_org, "foreign", flat_definition("0.1"))

    with pytest.raises(ValidationError, match="measures electricity but the tariff 'water'"):
        change(db, setup, water)
    with pytest.raises(NotFoundError, match=f"tariff {foreign} not found"):
        change(db, setup, foreign, key="change-2")

    assert assignments(db, setup.meter_id) == [(setup.tariff_id, minutes(0), None)]


def test_only_a_meter_of_this_open_account_in_this_organisation_can_change(
    db: Database, clock: FakeClock
) -> None:
    setup = one_meter_account(db, price="1")
    second = make_tariff(db, setup.org, "second", flat_definition("2"))
    spare = make_meter(db, setup.org, "M2")
    other_org: Org = make_org(db, "Org B")

    def attempt(account_id: int, meter_id: int, org_id: int = setup.org.id) -> None:
        tariff_change.change_tariff(
            db,
            organisation_id=org_id,
            account_id=account_id,
            meter_id=meter_id,
            tariff_id=second,
            actor=ACTOR,
            idempotency_key="attempt",
        )

    with pytest.raises(NotFoundError, match="M2 is not a meter of account A-1"):
        attempt(setup.account.account_id, spare)
    with pytest.raises(NotFoundError, match="not found"):
        attempt(setup.account.account_id, setup.meter_id, other_org.id)
    with pytest.raises(NotFoundError, match="account 999 not found"):
        attempt(999, setup.meter_id)
    clock.advance(timedelta(hours=1))
    accounts.close_account(
        db,
        organisation_id=setup.org.id,
        number="A-1",
        final_readings=[accounts.FinalReading(setup.meter_id, D("1001"))],
        refund_method="cash",
        actor=ACTOR,
        idempotency_key="close",
    )
    with pytest.raises(ConflictError, match="A-1 is closed"):
        attempt(setup.account.account_id, setup.meter_id)


def test_a_change_is_audited_with_both_tariffs_and_the_switch(db: Database) -> None:
    setup = one_meter_account(db, price="1")
    dearer = make_tariff(db, setup.org, "dearer", flat_definition("2"))

    change(db, setup, dearer)

    with db.read() as conn:
        [(actor, subject, detail)] = conn.execute(
            select(audit_log.c.actor, audit_log.c.subject, audit_log.c.detail).where(
                audit_log.c.action == "account.tariff_change"
            )
        ).all()
    assert (actor, subject) == (ACTOR, "account:A-1")
    assert all(word in detail for word in ('"flat"', '"dearer"', '"M1"', "change-1"))


def test_a_meter_billing_account_is_told_to_push_the_new_prices(db: Database) -> None:
    org = make_org(db)
    cheap = make_tariff(db, org, "cheap", flat_definition("1"))
    dearer = make_tariff(db, org, "dearer", flat_definition("2"))
    meter = make_meter(db, org)
    request = accounts.OpenAccount(
        number="A-9",
        customer_id=org.customer_id,
        meters=[accounts.MeterOpening(meter, cheap, D(0))],
        billing_mode="meter",
    )
    opened = accounts.open_account(db, organisation_id=org.id, request=request, actor=ACTOR)

    done = tariff_change.change_tariff(
        db,
        organisation_id=org.id,
        account_id=opened.account_id,
        meter_id=meter,
        tariff_id=dearer,
        actor=ACTOR,
        idempotency_key="k",
    )

    assert "sync-prices" in done.message


def test_one_account_many_meters_changes_only_the_named_meter(db: Database) -> None:
    org = make_org(db)
    cheap = make_tariff(db, org, "cheap", flat_definition("1"))
    dearer = make_tariff(db, org, "dearer", flat_definition("2"))
    first, second = make_meter(db, org, "M1"), make_meter(db, org, "M2")
    opened = open_account(db, org, "A-1", [(first, cheap, "0"), (second, cheap, "0")])
    tariff_change.change_tariff(
        db,
        organisation_id=org.id,
        account_id=opened.account_id,
        meter_id=second,
        tariff_id=dearer,
        actor=ACTOR,
        idempotency_key="k",
    )

    Ingestor(db).ingest([reading(first, minutes(60), "5"), reading(second, minutes(60), "5")])

    assert wallet(db, opened) == D("85.00")  # 5 × 1 + 5 × 2


def test_a_change_waits_for_a_batch_of_the_meter_in_flight_and_switches_at_its_reading(
    db: Database,
) -> None:
    """The change locks the meter's cursor as ingest does: it cannot slip between a batch's
    placing of readings and its commit, so its switch is the batch's last reading."""
    setup = one_meter_account(db, price="1", credit="100", opening="1000")
    dearer = make_tariff(db, setup.org, "dearer", flat_definition("2"))
    pipeline = Ingestor(db)
    results: list[Any] = []
    waiting = threading.Thread(target=lambda: results.append(change(db, setup, dearer)))
    with db.transaction() as conn:
        pipeline.ingest_in(conn, [reading(setup.meter_id, minutes(60), "1010")], minutes(61))
        waiting.start()
        waiting.join(timeout=0.5)
        assert waiting.is_alive()  # held by the batch's lock, whatever the timing
    waiting.join(timeout=30)

    [done] = results
    assert done.effective_at == minutes(60)
    pipeline.ingest([reading(setup.meter_id, minutes(120), "1015")])
    assert wallet(db, setup.account) == D("80.00")
