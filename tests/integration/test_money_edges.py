"""Money edges found by red-teaming the desk and the ingest together: emergency credit outstanding
when an account closes or asks for a refund, and desk operations racing each other on
PostgreSQL. Each test names what must hold; the books are checked after each."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from builders import (
    ACTOR,
    D,
    Setup,
    check_books,
    ledger_code_balances,
    minutes,
    one_meter_account,
    owed,
    reading,
    wallet,
)

from meterdesk.billing import accounts, cashier_refund, control_admin
from meterdesk.billing.control_send import RecordingOutbox
from meterdesk.billing.ingest import Ingestor
from meterdesk.db.database import Database
from meterdesk.shared.errors import InsufficientFundsError
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration

RECEIVABLE = "receivable:emergency_credit"


def close(db: Database, setup: Setup, final: str, key: str = "close-1") -> Any:
    return accounts.close_account(
        db,
        organisation_id=setup.org.id,
        number="A-1",
        final_readings=[accounts.FinalReading(setup.meter_id, D(final))],
        refund_method="cash",
        actor=ACTOR,
        idempotency_key=key,
    )


def with_emergency_credit_taken(db: Database, clock: FakeClock) -> Setup:
    """10.00 credit used up at 1.00/kWh, then 10.00 of emergency credit taken (owed)."""
    setup = one_meter_account(db, price="1", credit="10")
    outbox = RecordingOutbox()
    control_admin.set_account_policy(
        db,
        organisation_id=setup.org.id,
        number="A-1",
        actor=ACTOR,
        outbox=outbox,
        change=control_admin.PolicyChange(emergency_credit="10.00"),
    )
    Ingestor(db).ingest([reading(setup.meter_id, minutes(15), "1010")])
    control_admin.take_emergency_credit(
        db, organisation_id=setup.org.id, number="A-1", actor="tenant", outbox=outbox
    )
    assert wallet(db, setup.account) == D("10.00")
    clock.advance(timedelta(hours=1))
    return setup


# --- emergency credit ------------------------------------------------------------------------


def test_closing_with_unused_emergency_credit_repays_it_instead_of_refunding_it(
    db: Database, clock: FakeClock
) -> None:
    """The 10.00 in the wallet is the operator's loan, not the tenant's money: closing must
    repay it, not pay it out as a refund while the loan stays unrecorded."""
    setup = with_emergency_credit_taken(db, clock)

    closed = close(db, setup, "1010")

    assert (closed.refunded, closed.arrears) == (D("0.00"), D("0.00"))
    assert ledger_code_balances(db)[RECEIVABLE] == 0
    check_books(db)


def test_closing_with_emergency_credit_spent_leaves_it_owed_as_arrears(
    db: Database, clock: FakeClock
) -> None:
    """Spent emergency credit is a debt: after closing it must still be owed by the tenant."""
    setup = with_emergency_credit_taken(db, clock)

    closed = close(db, setup, "1020")  # the 10.00 of emergency credit used up

    assert (closed.refunded, closed.arrears) == (D("0.00"), D("10.00"))
    assert (wallet(db, setup.account), owed(db, setup.account)) == (D("0.00"), D("10.00"))
    assert ledger_code_balances(db)[RECEIVABLE] == 0
    check_books(db)


def test_emergency_credit_cannot_be_refunded_as_cash(db: Database, clock: FakeClock) -> None:
    setup = with_emergency_credit_taken(db, clock)

    with pytest.raises(InsufficientFundsError):
        cashier_refund.refund(
            db,
            organisation_id=setup.org.id,
            account_id=setup.account.account_id,
            amount="10",
            method="cash",
            actor=ACTOR,
            idempotency_key="refund-1",
        )
    assert wallet(db, setup.account) == D("10.00")
    check_books(db)
