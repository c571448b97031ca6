"""Arrears a closed quantity-credit account (购量, decision 0006) pays at the desk (欠费补缴), on
SQLite and PostgreSQL: a closing in overdraft leaves the quantity used ahead owed; what is paid
buys that quantity back at the price it was charged (as a purchase would on an open account), so
once nothing is owed the quantity left reads 0 — the account balance in the CLI and the API
kept reading it negative. A payment reversed owes it again.
"""

from __future__ import annotations

import pytest
from builders import D, check_books, owed, reading
from test_quantity_leftovers import reverse
from test_quantity_review import close, consistent, held, hours, quantity_account

from meterdesk.billing import cashier_arrears
from meterdesk.billing.ingest import Ingestor
from meterdesk.billing.quantity_model import Block
from meterdesk.db.database import Database
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration


def test_arrears_paid_after_closing_in_overdraft_leave_no_quantity_owed(
    db: Database, clock: FakeClock
) -> None:
    setup = quantity_account(db, credit="10.03")  # 2 m³ at 5.00, 0.03 carried
    Ingestor(db).ingest([reading(setup.meter_id, hours(1), "103")])
    clock.now = hours(2)
    assert close(db, setup, "103.5").arrears == D("7.47")  # 1.5 m³ used ahead, less 0.03
    assert held(db, setup.account.account_id).left == D("-1.5")

    def pay(amount: str, key: str) -> int:
        return cashier_arrears.pay_arrears(
            db,
            organisation_id=setup.org.id,
            account_id=setup.account.account_id,
            amount=amount,
            method="cash",
            actor="cashier",
            idempotency_key=key,
        ).transfer_id

    first = pay("5.00", "a-1")  # buys back 1 m³ at 5.00
    assert held(db, setup.account.account_id).left == D("-0.5")
    last = pay("2.47", "a-2")  # the rest, with the 0.03 the closing took
    assert pay("2.47", "a-2") == last
    view = held(db, setup.account.account_id)
    assert (view.left, view.remainder, owed(db, setup.account)) == (D(0), D(0), D(0))
    assert consistent(db, setup) == view

    # The last payment made in error: owed again, and so is the quantity it bought back.
    reverse(db, setup, last, "v-1")
    assert (held(db, setup.account.account_id).left, owed(db, setup.account)) == (
        D("-0.5"),
        D("2.47"),
    )
    reverse(db, setup, first, "v-2")
    assert held(db, setup.account.account_id).left == D("-1.5")
    check_books(db)


def test_a_closing_whose_carried_money_covers_the_use_ahead_leaves_none_owed_and_none_ahead(
    db: Database, clock: FakeClock
) -> None:
    # Found by the review (sitting 19): the carried remainder paid for the use ahead at the
    # closing, nothing was owed, so no payment could ever buy that quantity back, and the
    # closed account read -0.004 m³ left for ever.
    setup = quantity_account(db, credit="10.03")  # 2 m³ at 5.00, 0.03 carried
    Ingestor(db).ingest([reading(setup.meter_id, hours(1), "102.004")])  # 0.004 m³ ahead: 0.02
    clock.now = hours(2)
    closed = close(db, setup, "102.004")
    assert (closed.refunded, closed.arrears) == (D("0.01"), D(0))  # 0.03 − 0.02
    view = held(db, setup.account.account_id)
    assert (view.left, view.remainder, owed(db, setup.account)) == (D(0), D(0), D(0))
    assert view.blocks[-1] == Block(D("0.004"), D("5.00"))  # bought back at its price
    assert consistent(db, setup) == view
    check_books(db)
