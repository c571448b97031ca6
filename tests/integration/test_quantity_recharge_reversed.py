"""A recharge of a quantity-credit account (购量, decision 0006) reversed at the desk (冲正), on
SQLite and PostgreSQL: the reversal takes back exactly the lots that recharge bought, at their
own prices — not the newest quantity worth its money — and the other lots stay as they were;
refused, changing nothing, once part of those lots is used or refunded.

Water at 5.00 per m³, then 6.00 from 2026-11-03 (and a purchase split over water tiers, 阶梯).
Every scenario checks :func:`consistent` (the
lines are the plan's price of the use and the money is what the lots cost plus the remainder,
less the lines).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from builders import T0, D, Setup, check_books, reading, snapshot, wallet
from test_quantity_credit import WATER_TIERS, buy
from test_quantity_leftovers import lots, price_from, reverse
from test_quantity_review import consistent, hours, quantity_account, refund

from meterdesk.billing import quantity
from meterdesk.billing.ingest import Ingestor
from meterdesk.db.database import Database
from meterdesk.shared.errors import ConflictError, InsufficientFundsError, ValidationError
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration


def two_prices(db: Database, clock: FakeClock, credit: str = "50.00") -> tuple[Setup, int, int]:
    """Opened with ``credit`` at 5.00 (its recharge the first), then 30.00 at 6.00 (the second):
    10 m³ at 5.00 and 5 m³ at 6.00 with 50.00."""
    setup = quantity_account(db, credit=credit)
    first = setup.account.initial_transfer_id
    assert first is not None
    price_from(db, setup, "2026-11-03", "6.00")
    clock.now = T0 + timedelta(days=2)
    second = buy(db, setup, "30.00", "r-2")
    return setup, first, second


def use(db: Database, setup: Setup, at: float, total: str) -> None:
    Ingestor(db).ingest([reading(setup.meter_id, hours(at, T0 + timedelta(days=2)), total)])


def test_the_first_of_two_recharges_reversed_takes_its_own_lot(
    db: Database, clock: FakeClock
) -> None:
    setup, first, _ = two_prices(db, clock)
    assert lots(consistent(db, setup)) == [(D(10), D("5.00")), (D(5), D("6.00"))]
    reverse(db, setup, first, "v-1")
    view = consistent(db, setup)
    # the 10 m³ at 5.00 it bought are gone; the 5 m³ at 6.00 stay (not 6 m³ at 5.00 left, as
    # when the newest quantity worth 50.00 was taken)
    assert lots(view) == [(D(5), D("6.00"))]
    assert (view.left, view.remainder, wallet(db, setup.account)) == (D(5), D(0), D("30.00"))
    assert view.price == D("6.00")
    use(db, setup, 1, "102")  # use is priced by what is left: 2 m³ at 6.00
    view = consistent(db, setup)
    assert (view.left, wallet(db, setup.account)) == (D(3), D("18.00"))
    check_books(db)


def test_the_second_of_two_recharges_reversed_takes_its_own_lot(
    db: Database, clock: FakeClock
) -> None:
    setup, _, second = two_prices(db, clock)
    reverse(db, setup, second, "v-1")
    view = consistent(db, setup)
    assert lots(view) == [(D(10), D("5.00"))]
    assert (view.left, view.remainder, wallet(db, setup.account)) == (D(10), D(0), D("50.00"))
    assert view.price == D("5.00")  # use beyond the plan: the price before the second again
    check_books(db)


def test_a_recharge_whose_lot_is_partly_used_is_not_reversed(
    db: Database, clock: FakeClock
) -> None:
    setup, first, second = two_prices(db, clock, credit="50.03")  # 0.03 carried along
    use(db, setup, 1, "104")  # 4 of the first lot's 10 m³, at 5.00
    before = snapshot(db), consistent(db, setup)
    with pytest.raises(InsufficientFundsError) as refused:
        reverse(db, setup, first, "v-1")
    # The wallet holds 60.03, more than 50.03: refused for the lot, not for the money.
    assert str(refused.value) == (
        f"recharge {first} of 50.03 cannot be reversed: account Q-1 has already used 4.00 m³ of "
        "the 10.00 m³ it bought (a reversal takes back the recharge's own quantity, whole); "
        "refund what is left instead"
    )
    assert (snapshot(db), consistent(db, setup)) == before  # nothing changed
    # The second, unused, goes alone; the first lot stays as it was, 6 m³ of it left.
    reverse(db, setup, second, "v-2")
    view = consistent(db, setup)
    assert lots(view) == [(D(10), D("5.00"))]
    assert (view.left, view.remainder, wallet(db, setup.account)) == (D(6), D("0.03"), D("30.03"))
    # A late reading (measured before the last one) prices the same after the reversal.
    use(db, setup, 0.5, "102")
    assert consistent(db, setup) == view
    check_books(db)


def test_a_recharge_whose_money_paid_for_use_ahead_is_not_reversed(
    db: Database, clock: FakeClock
) -> None:
    setup = quantity_account(db, credit="0")
    Ingestor(db).ingest([reading(setup.meter_id, hours(1), "104")])  # 4 m³ ahead at 5.00
    recharge = buy(db, setup, "50.00", "r-1")  # buys the 4 m³ back, then 6 m³
    before = snapshot(db)
    with pytest.raises(InsufficientFundsError, match=r"has already used 4\.00 m³ of the 10\.00 m³"):
        reverse(db, setup, recharge, "v-1")
    assert snapshot(db) == before
    check_books(db)


def test_a_recharge_partly_refunded_is_reversed_after_that_refund(
    db: Database, clock: FakeClock
) -> None:
    setup, first, second = two_prices(db, clock)
    back = refund(db, setup, "40.00", "f-1")  # all 5 m³ at 6.00, then 2 m³ at 5.00
    assert lots(consistent(db, setup)) == [(D(8), D("5.00"))]
    before = snapshot(db)
    with pytest.raises(InsufficientFundsError) as refused:
        reverse(db, setup, second, "v-1")  # the wallet holds 40.00, the recharge was 30.00
    assert str(refused.value) == (
        f"recharge {second} of 30.00 cannot be reversed: 5.00 m³ of the 5.00 m³ it bought were "
        "refunded since; reverse that refund first, or refund what is left instead"
    )
    with pytest.raises(InsufficientFundsError, match=r"2\.00 m³ of the 10\.00 m³ it bought were"):
        reverse(db, setup, first, "v-2")
    assert snapshot(db) == before
    reverse(db, setup, back, "v-3")  # the refund's lots come back, each still its recharge's
    assert [(b.quantity, b.price, b.bought_by) for b in consistent(db, setup).blocks[1:]] == [
        (D(8), D("5.00"), first),
        (D(2), D("5.00"), first),
        (D(5), D("6.00"), second),
    ]
    reverse(db, setup, second, "v-4")
    view = consistent(db, setup)
    assert lots(view) == [(D(10), D("5.00"))]  # the first's two pieces, at its price
    assert (view.left, view.remainder, wallet(db, setup.account)) == (D(10), D(0), D("50.00"))
    check_books(db)


def test_the_money_a_recharge_left_carried_comes_off_the_newest_lot_once_spent(
    db: Database, clock: FakeClock
) -> None:
    setup = quantity_account(db, credit="50.03")  # 10 m³ at 5.00, 0.03 carried
    first = setup.account.initial_transfer_id
    assert first is not None
    clock.now = hours(1)
    buy(db, setup, "9.97", "r-2")  # with the 0.03: 10.00 buys 2 m³, nothing carried
    reverse(db, setup, first, "v-1")
    view = consistent(db, setup)
    # its 10 m³ (50.00) and the 0.03 it carried into the second lot: 0.006 m³ of that lot
    assert lots(view) == [(D("1.994"), D("5.00"))]
    assert (view.left, view.remainder, wallet(db, setup.account)) == (
        D("1.994"),
        D(0),
        D("9.97"),
    )
    check_books(db)


def test_a_reversal_repeated_answers_the_same_and_is_not_itself_reversed(
    db: Database, clock: FakeClock
) -> None:
    setup, first, _ = two_prices(db, clock)
    reversal = reverse(db, setup, first, "v-1")
    after = snapshot(db), consistent(db, setup)
    assert reverse(db, setup, first, "v-1") == reversal  # the same key: the first answer
    with pytest.raises(ConflictError, match=f"already reversed by transfer {reversal}"):
        reverse(db, setup, first, "v-2")
    with pytest.raises(ConflictError, match="not a reversal"):
        reverse(db, setup, reversal, "v-3")  # a mistaken reversal: recharge again instead
    assert (snapshot(db), consistent(db, setup)) == after
    # Recharging again buys at today's price (6.00): the reversed lot does not come back.
    buy(db, setup, "50.00", "r-3")
    assert lots(consistent(db, setup)) == [(D("13.33"), D("6.00"))]  # 5 and 8.33 at 6.00
    check_books(db)


def test_a_purchase_split_over_water_tiers_is_reversed_whole(
    db: Database, clock: FakeClock
) -> None:
    setup = quantity_account(db, definition=WATER_TIERS, credit="0")
    first = buy(db, setup, "50.00", "r-1")  # 10 m³ at 3.00 up to the bound, 5 m³ at 4.00
    second = buy(db, setup, "20.00", "r-2")  # from 15 m³: 5 m³ at 4.00
    assert [(b.quantity, b.price, b.bought_by) for b in consistent(db, setup).blocks[1:]] == [
        (D(10), D("3.00"), first),
        (D(5), D("4.00"), first),
        (D(5), D("4.00"), second),
    ]
    reverse(db, setup, first, "v-1")
    view = consistent(db, setup)
    assert lots(view) == [(D(5), D("4.00"))]  # both of its blocks gone, the second's stays
    assert (view.left, view.remainder, wallet(db, setup.account)) == (D(5), D(0), D("20.00"))
    use(db, setup, 1, "103")  # 3 m³ of the second's lot, at 4.00
    view = consistent(db, setup)
    assert (view.left, wallet(db, setup.account)) == (D(2), D("8.00"))
    check_books(db)


def test_the_carried_money_short_and_nothing_to_cover_it_is_refused(
    db: Database, clock: FakeClock
) -> None:
    # Reached at the desk only within a fen of the running total's rounding (the ledger refuses
    # first); the rule itself, on a state where nothing unused is left to take the 0.03 from.
    setup = quantity_account(db, credit="50.03")  # 10 m³ at 5.00, 0.03 carried
    first = setup.account.initial_transfer_id
    assert first is not None
    clock.now = hours(1)
    buy(db, setup, "9.97", "r-2")  # with the 0.03: 2 m³, nothing carried
    Ingestor(db).ingest([reading(setup.meter_id, hours(2), "112")])  # all 12 m³ used
    with (
        pytest.raises(ValidationError, match=r"the 0\.03 it left carried was used since"),
        db.transaction() as conn,
    ):
        quantity.reverse_recharge_in(
            conn,
            account_id=setup.account.account_id,
            recharge_id=first,
            transfer_id=first,
            money=D("50.03"),
            at=clock.now,
        )
