"""A refund of a quantity-credit account (购量, decision 0006) reversed at the desk (冲正), on
SQLite and PostgreSQL: the reversal puts back the lots that refund took, at their own prices,
and the carried remainder it paid — not a new purchase at today's price — so refund and
reversal leave the quantity, the lots and the money as they were, whatever the price did in
between. Refused, changing nothing, while the account has used ahead since.

Every scenario checks :func:`consistent` (the lines are the plan's price of the use and the money
is what the lots cost plus the remainder, less the lines).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from builders import T0, D, Setup, check_books, owed, reading, wallet
from test_money_races import held_before, racing
from test_quantity_credit import buy
from test_quantity_review import (
    consistent,
    hours,
    lot_rows,
    quantity_account,
    refund,
    supply,
)

from meterdesk.billing import cashier_refund
from meterdesk.billing.ingest import Ingestor
from meterdesk.billing.quantity import QuantityView
from meterdesk.db.database import Database
from meterdesk.shared.errors import ConflictError
from meterdesk.shared.time import FakeClock
from meterdesk.tariffs import service as tariffs

pytestmark = pytest.mark.integration


def reverse(db: Database, setup: Setup, transfer_id: int, key: str) -> int:
    return cashier_refund.reverse(
        db, organisation_id=setup.org.id, transfer_id=transfer_id, actor="op", idempotency_key=key
    )


def price_from(db: Database, setup: Setup, day: str, price: str) -> None:
    tariffs.add_version(
        db,
        organisation_id=setup.org.id,
        tariff_id=setup.tariff_id,
        version={"effective_from": day, "prices": {"flat": price}},
        actor="op",
    )


def state(db: Database, setup: Setup) -> tuple[Any, ...]:
    """What the account holds: the view with its lots as priced (see :func:`lots`), the wallet
    and the arrears."""
    view = consistent(db, setup)
    return (
        replace(view, blocks=()),
        lots(view),
        wallet(db, setup.account),
        owed(db, setup.account),
    )


def lots(view: QuantityView) -> list[tuple[D, D]]:
    """The plan's blocks in order, neighbours at one price as one: a lot a refund cut in two
    comes back as two blocks at its price, which price every use the same as one."""
    merged: list[tuple[D, D]] = []
    for block in view.blocks:
        if merged and merged[-1][1] == block.price:
            merged[-1] = (merged[-1][0] + block.quantity, block.price)
        elif block.quantity:
            merged.append((block.quantity, block.price))
    return merged


# --- a refund reversed ---------------------------------------------------------------------------


def test_a_refund_reversed_after_a_price_change_restores_its_lots_and_remainder(
    db: Database, clock: FakeClock
) -> None:
    setup = quantity_account(db, credit="50.03")  # 10.00 m³ at 5.00, 0.03 carried
    price_from(db, setup, "2026-11-03", "6.00")
    clock.now = T0 + timedelta(days=2)
    buy(db, setup, "30.00", "r-2")  # 30.03 at 6.00: 5.00 m³, 0.03 carried
    before = state(db, setup)
    assert (before[0].left, before[0].remainder, before[2]) == (D(15), D("0.03"), D("80.03"))

    # 0.03 carried, then 5 m³ at 6.00 (30.00) and 2 m³ at 5.00 (10.00)
    back = refund(db, setup, "40.03", "f-1")
    assert (consistent(db, setup).left, wallet(db, setup.account)) == (D(8), D(40))
    price_from(db, setup, "2026-11-05", "8.00")  # the price changes before the clerk sees it
    clock.now = T0 + timedelta(days=4)

    reversal = reverse(db, setup, back, "v-1")
    # Bought again at 8.00 this would have been 5.00 m³: the 7 m³ come back at 5.00 and 6.00.
    assert state(db, setup) == before
    assert before[1] == [(D(10), D("5.00")), (D(5), D("6.00"))]
    rows = lot_rows(db, setup.account.account_id)
    assert reverse(db, setup, back, "v-1") == reversal  # a repeated reversal changes nothing
    assert lot_rows(db, setup.account.account_id) == rows
    assert state(db, setup) == before

    # The restored lots are used at their own prices, in their order.
    Ingestor(db).ingest([reading(setup.meter_id, clock.now + timedelta(hours=1), "112")])
    view = consistent(db, setup)
    assert (view.left, wallet(db, setup.account)) == (D(3), D("80.03") - D("10") * 5 - 2 * 6)
    check_books(db)


def test_a_refund_of_the_remainder_only_reversed_restores_the_remainder(
    db: Database, clock: FakeClock
) -> None:
    setup = quantity_account(db, credit="50.04")  # 10.00 m³ at 5.00, 0.04 carried
    before = state(db, setup)
    back = refund(db, setup, "0.03", "f-1")
    assert consistent(db, setup).remainder == D("0.01")
    reverse(db, setup, back, "v-1")
    assert state(db, setup) == before
    check_books(db)


def test_a_refund_reversed_after_use_and_a_purchase_restores_the_unused_lots_it_took(
    db: Database, clock: FakeClock
) -> None:
    setup = quantity_account(db)  # 10 m³ at 5.00
    back = refund(db, setup, "20.00", "f-1")  # 4 m³ at 5.00
    Ingestor(db).ingest([reading(setup.meter_id, hours(1), "105")])  # 5 of the 6 left
    price_from(db, setup, "2026-11-03", "6.00")
    clock.now = T0 + timedelta(days=2)
    buy(db, setup, "12.00", "r-2")  # 2 m³ at 6.00
    reverse(db, setup, back, "v-1")
    view, priced, money, _ = state(db, setup)
    # 1 + 2 + the 4 restored at 5.00 after the purchase (use already priced is not touched)
    assert (view.left, money) == (D(7), D("50") - 25 + 12)
    assert priced[-2:] == [(D(2), D("6.00")), (D(4), D("5.00"))]
    assert supply(db, setup) == "on"
    check_books(db)


def test_a_refund_reversed_after_the_account_used_ahead_is_refused(
    db: Database, clock: FakeClock
) -> None:
    setup = quantity_account(db)  # 10 m³ at 5.00
    price_from(db, setup, "2026-11-03", "6.00")
    clock.now = T0 + timedelta(days=2)
    buy(db, setup, "12.00", "r-2")  # 2 m³ at 6.00
    back = refund(db, setup, "22.00", "f-1")  # 2 m³ at 6.00, 2 m³ at 5.00
    Ingestor(db).ingest([reading(setup.meter_id, clock.now + timedelta(hours=1), "109")])
    before = state(db, setup)
    assert before[0].left == D(-1)  # 1 m³ used ahead, charged at 5.00
    rows = lot_rows(db, setup.account.account_id)
    # Restored, the lots would price that 1 m³ again (at 5.00 and 6.00): refused, nothing done.
    with pytest.raises(ConflictError, match=r"has used 1\.00 m³ ahead since"):
        reverse(db, setup, back, "v-1")
    assert state(db, setup) == before
    assert lot_rows(db, setup.account.account_id) == rows
    # A purchase buys the used-ahead quantity back; then the refund can be reversed.
    buy(db, setup, "5.00", "r-3")
    reverse(db, setup, back, "v-2")
    view = consistent(db, setup)
    assert view.left == D(4)
    assert [(b.quantity, b.price) for b in view.blocks[-3:]] == [
        (D(1), D("5.00")),  # the 1 m³ used ahead bought back at 5.00
        (D(2), D("5.00")),  # and the refund's 4 m³ back
        (D(2), D("6.00")),
    ]
    check_books(db)


# Sequences of desk entries around refunds: after reversing every refund the account holds
# what it held before them, whatever came between (in quantity, value and money).
SEQUENCES = [
    ["refund 12.00", "rise", "reverse 0"],
    ["refund 3.00", "refund 20.00", "reverse 1", "reverse 0"],
    ["refund 3.00", "refund 20.00", "reverse 0", "reverse 1"],
    ["refund 7.77", "rise", "buy 30.00", "refund 40.00", "reverse 0", "reverse 1"],
    ["refund 0.01", "buy 0.04", "reverse 0"],
]


@pytest.mark.parametrize("steps", SEQUENCES, ids=[" ; ".join(s) for s in SEQUENCES])
def test_reversing_every_refund_restores_what_they_took(
    db: Database, clock: FakeClock, steps: list[str]
) -> None:
    setup = quantity_account(db, credit="50.03")  # 10.00 m³ at 5.00, 0.03 carried
    clock.now = hours(1)
    buy(db, setup, "26.00", "r-1")  # 26.03 → 5.20 m³, 0.03 carried
    before = state(db, setup)
    refunds: list[int] = []
    bought = D(0)
    for number, step in enumerate(steps):
        what, _, amount = step.partition(" ")
        if what == "refund":
            refunds.append(refund(db, setup, amount, f"f-{number}"))
        elif what == "reverse":
            reverse(db, setup, refunds[int(amount)], f"v-{number}")
        elif what == "buy":
            buy(db, setup, amount, f"b-{number}")
            bought += D(amount)
        else:  # a price rise from tomorrow
            price_from(db, setup, "2026-11-03", "7.00")
            clock.now = T0 + timedelta(days=2)
        consistent(db, setup)
    after = state(db, setup)
    view, money = after[0], after[2]
    assert money == D("76.03") + bought
    assert view.unused_value + view.remainder == money
    if not bought:  # nothing but refunds, their reversals and a price change: all as it was
        assert after == before
    check_books(db)


def test_two_reversals_of_one_refund_at_once_put_its_lots_back_once(
    db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Review (sitting 19): the second waits for the account's lock (PostgreSQL), then finds the
    # refund reversed; on SQLite they run one after the other.
    setup = quantity_account(db, credit="50.03")  # 10.00 m³ at 5.00, 0.03 carried
    before = state(db, setup)
    back = refund(db, setup, "20.03", "f-1")
    first = held_before(
        monkeypatch, cashier_refund, "_audit_reversal", lambda: reverse(db, setup, back, "v-1")
    )
    second = racing(db, monkeypatch, lambda: reverse(db, setup, back, "v-2"))
    first.release()
    second.release()
    assert isinstance(first.outcome, int), first.outcome
    assert isinstance(second.outcome, ConflictError), second.outcome
    assert "already reversed" in str(second.outcome)
    assert state(db, setup) == before
    check_books(db)
