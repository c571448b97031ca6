"""Statements (对账单): every entry touching the wallet or the arrears in a half-open period,
oldest first, with the running balance after each; opening + entries = closing, to the fen.

The story used throughout, one event per hour after T0 (price 1.00/kWh):
  T0     open with 10.00 credit
  T0+1h  30 kWh used: 10.00 from the wallet, 20.00 to arrears
  T0+2h  recharge 50.00: the arrears (20.00) are repaid first → wallet 30.00
  T0+3h  refund 5.00 → wallet 25.00
  T0+4h  5 kWh used → wallet 20.00
"""

from __future__ import annotations

import itertools
import threading
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from builders import T0, D, Setup, minutes, one_meter_account, reading
from sqlalchemy import func, select

from meterdesk.billing import cashier, cashier_refund, statements
from meterdesk.billing.ingest import Ingestor
from meterdesk.db.database import Database
from meterdesk.ledger.tables import transfers
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration


def hours(count: float) -> datetime:
    return T0 + timedelta(hours=count)


def story(db: Database, clock: FakeClock) -> Setup:
    setup = one_meter_account(db, price="1", credit="10")
    pipeline = Ingestor(db)
    clock.now = hours(1)
    pipeline.ingest([reading(setup.meter_id, minutes(50), "1030")])
    clock.now = hours(2)
    money = {"organisation_id": setup.org.id, "account_id": setup.account.account_id}
    cashier.recharge(db, **money, amount="50", method="cash", actor="c", idempotency_key="r-1")
    clock.now = hours(3)
    cashier_refund.refund(db, **money, amount="5", method="cash", actor="c", idempotency_key="f-1")
    clock.now = hours(4)
    pipeline.ingest([reading(setup.meter_id, minutes(230), "1035")])
    clock.now = hours(5)
    return setup


def statement(db: Database, setup: Setup, start: datetime, end: datetime) -> statements.Statement:
    return statements.statement(
        db, organisation_id=setup.org.id, number="A-1", start=start, end=end
    )


def assert_adds_up(found: statements.Statement) -> None:
    balance, arrears = found.opening_balance, found.opening_arrears
    for line in found.lines:
        balance += line.balance_change
        arrears += line.arrears_change
        assert (line.balance_after, line.arrears_after) == (balance, arrears)
    assert (found.closing_balance, found.closing_arrears) == (balance, arrears)


def test_a_whole_life_statement_adds_up_line_by_line(db: Database, clock: FakeClock) -> None:
    setup = story(db, clock)

    found = statement(db, setup, T0, hours(5))

    assert_adds_up(found)
    assert [
        (
            line.reason,
            line.balance_change,
            line.arrears_change,
            line.balance_after,
            line.arrears_after,
        )
        for line in found.lines
    ] == [
        ("recharge", D("10.00"), D("0.00"), D("10.00"), D("0.00")),
        ("deduction", D("-10.00"), D("0.00"), D("0.00"), D("0.00")),
        ("deduction", D("0.00"), D("20.00"), D("0.00"), D("20.00")),
        ("recharge", D("50.00"), D("0.00"), D("50.00"), D("20.00")),
        ("arrears_repayment", D("-20.00"), D("-20.00"), D("30.00"), D("0.00")),
        ("refund", D("-5.00"), D("0.00"), D("25.00"), D("0.00")),
        ("deduction", D("-5.00"), D("0.00"), D("20.00"), D("0.00")),
    ]
    assert (found.opening_balance, found.opening_arrears) == (D("0.00"), D("0.00"))
    assert (found.closing_balance, found.closing_arrears) == (D("20.00"), D("0.00"))


def test_a_period_statement_opens_with_the_balance_before_it_and_excludes_its_end(
    db: Database, clock: FakeClock
) -> None:
    setup = story(db, clock)

    found = statement(db, setup, hours(2), hours(4))  # [T0+2h, T0+4h)

    assert_adds_up(found)
    assert (found.opening_balance, found.opening_arrears) == (D("0.00"), D("20.00"))
    assert [line.reason for line in found.lines] == ["recharge", "arrears_repayment", "refund"]
    assert (found.closing_balance, found.closing_arrears) == (D("25.00"), D("0.00"))


def test_consecutive_statements_chain_closing_to_opening(db: Database, clock: FakeClock) -> None:
    setup = story(db, clock)
    cuts = [T0, hours(1.5), hours(3), hours(5)]

    parts = [statement(db, setup, a, b) for a, b in itertools.pairwise(cuts)]

    for earlier, later in itertools.pairwise(parts):
        assert (later.opening_balance, later.opening_arrears) == (
            earlier.closing_balance,
            earlier.closing_arrears,
        )
    assert sum(len(part.lines) for part in parts) == 7
    assert parts[-1].closing_balance == D("20.00")


def test_the_statement_balance_agrees_with_the_accounts_balance(
    db: Database, clock: FakeClock
) -> None:
    setup = story(db, clock)

    found = statement(db, setup, T0, hours(5))
    balance = statements.balance(db, organisation_id=setup.org.id, number="A-1")

    assert (found.closing_balance, found.closing_arrears) == (balance.balance, balance.arrears)


def test_statement_lines_name_the_meter_and_month_of_deductions(
    db: Database, clock: FakeClock
) -> None:
    setup = story(db, clock)

    found = statement(db, setup, T0, hours(5))

    deductions = [line for line in found.lines if line.reason == "deduction"]
    assert {(line.meter_id, line.period_key) for line in deductions} == {
        (setup.meter_id, "2026-11")
    }
    assert {line.method for line in found.lines if line.reason in ("recharge", "refund")} == {
        "cash"
    }


def test_statement_totals_per_reason_count_each_transfer_once(
    db: Database, clock: FakeClock
) -> None:
    """The 20.00 arrears repayment moves the wallet and the arrears by 20.00 each: one amount."""
    setup = story(db, clock)

    found = statement(db, setup, T0, hours(5))

    assert found.totals == {
        "recharge": Decimal("60.00"),
        "deduction": Decimal("35.00"),
        "arrears_repayment": Decimal("20.00"),
        "refund": Decimal("5.00"),
    }


def test_reading_a_statement_does_not_hold_up_billing(
    db: Database, clock: FakeClock, request: pytest.FixtureRequest
) -> None:
    """A statement or report reads inside ``Database.read()``; meanwhile readings keep coming.
    On SQLite (WAL: readers never block the writer) the engine's "begin" hook issues BEGIN
    IMMEDIATE for every transaction, reads included (db/engine.py ``_on_begin``), so an open
    read holds the write lock: ingest waits for it (up to the 30 s busy timeout, then "database
    is locked"), and a read opened inside another read in one thread deadlocks."""
    setup = one_meter_account(db, price="1")
    billed = threading.Event()

    def ingest() -> None:
        Ingestor(db).ingest([reading(setup.meter_id, minutes(60), "1001")])
        billed.set()

    with db.read() as conn:
        conn.execute(select(func.count()).select_from(transfers))  # a statement query
        worker = threading.Thread(target=ingest)
        worker.start()
        in_time = billed.wait(2)
    worker.join(60)

    assert in_time, "ingest waited for a reader"
