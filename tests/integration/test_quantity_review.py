"""Quantity credit (购量) reviewed for money faults (sitting 17), through the service paths on
SQLite and PostgreSQL: meter replacement, tariff change to tiers, closing in overdraft and with a
remainder, a released jump, months and years of use, replays of desk entries, a purchase too
small to buy a step, tier adder mode and yearly tiers, and two accounts in turn on one meter.

Every scenario ends with :func:`consistent`: the account's active lines cost exactly what its
plan says the use since opening costs (``F(used)``), their quantity is that use, and the money
(wallet net of arrears) is what the lots cost plus the remainder minus the lines, within the
running-total rounding (under one fen per month). Order-sensitive scenarios also compare with a
twin account fed the same readings in order.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from builders import (
    T0,
    D,
    Setup,
    active_lines,
    check_books,
    flat_definition,
    make_meter,
    make_org,
    make_tariff,
    open_account,
    owed,
    quarantined,
    reading,
    wallet,
)
from sqlalchemy import select
from test_quantity_credit import buy
from test_quantity_credit import quantity_account as opened_with_quantity

from meterdesk.billing import accounts, cashier_refund, corrections, quantity
from meterdesk.billing import tariff_change as tariff_changes
from meterdesk.billing.control_state import load_state
from meterdesk.billing.ingest import Ingestor
from meterdesk.billing.lines import select_lines
from meterdesk.billing.quantity import QuantityView
from meterdesk.billing.quantity_model import price_range
from meterdesk.billing.tables import quantity_lots
from meterdesk.db.database import Database
from meterdesk.shared.errors import InsufficientFundsError, ValidationError
from meterdesk.shared.time import FakeClock
from meterdesk.tariffs import service as tariffs

pytestmark = pytest.mark.integration

FEN = D("0.01")


def water_tiers(period: str = "month", mode: str = "price") -> dict[str, Any]:
    adder = mode == "adder"
    return {
        "utility": "water",
        "versions": [
            {
                "effective_from": "2026-01-01",
                "prices": {"flat": "3.00"} if adder else {},
                "tiers": {
                    "period": period,
                    "mode": mode,
                    "blocks": [
                        {"up_to": "10", "price": "0" if adder else "3.00"},
                        {"up_to": "20", "price": "1.00" if adder else "4.00"},
                        {"up_to": None, "price": "3.00" if adder else "6.00"},
                    ],
                },
            }
        ],
    }


def quantity_account(db: Database, **options: Any) -> Setup:
    """As the credit tests open one, with 50.00 (10.00 m³ at 5.00, nothing carried)."""
    return opened_with_quantity(db, **{"credit": "50.00", **options})


def held(db: Database, account_id: int) -> QuantityView:
    with db.read() as conn:
        return quantity.view(conn, account_id)


def refund(db: Database, setup: Setup, amount: str, key: str) -> int:
    return cashier_refund.refund(
        db,
        organisation_id=setup.org.id,
        account_id=setup.account.account_id,
        amount=amount,
        method="cash",
        actor="cashier",
        idempotency_key=key,
    ).transfer_id


def lot_rows(db: Database, account_id: int) -> int:
    with db.read() as conn:
        return len(
            conn.execute(
                select(quantity_lots.c.id).where(quantity_lots.c.account_id == account_id)
            ).all()
        )


def lines_of(db: Database, account_id: int) -> tuple[Decimal, Decimal, int]:
    """(quantity, exact cost, months) of the account's active lines."""
    with db.read() as conn:
        rows = conn.execute(
            select_lines(
                ("quantity", "cost", "period_key"),
                lambda line: (line["account_id"] == account_id, line["active"].is_(True)),
            )
        ).all()
    return (
        sum((D(q) for q, _, _ in rows), D(0)),
        sum((D(c) for _, c, _ in rows), D(0)),
        len({p for _, _, p in rows}),
    )


def consistent(db: Database, setup: Setup) -> QuantityView:
    """The lines are the plan's price of the use; the money is the lots less the lines."""
    account_id = setup.account.account_id
    view = held(db, account_id)
    used, cost, months = lines_of(db, account_id)
    assert used == view.used, (used, view)
    priced = sum((p.quantity * p.price for p in price_range(view.blocks, D(0), used)), D(0))
    assert cost == priced, (cost, priced, view)
    paid_for = sum((b.quantity * b.price for b in view.blocks), D(0)) + view.remainder
    net = wallet(db, setup.account) - owed(db, setup.account)
    assert abs(net - (paid_for - cost)) < FEN * max(months, 1), (net, paid_for, cost, view)
    return view


def supply(db: Database, setup: Setup) -> str:
    with db.read() as conn:
        return str(load_state(conn, setup.account.account_id)[0].supply)


def close(db: Database, setup: Setup, final: str, key: str = "close-1") -> accounts.ClosedAccount:
    return accounts.close_account(
        db,
        organisation_id=setup.org.id,
        number=setup.account.number,
        final_readings=[accounts.FinalReading(setup.meter_id, D(final))],
        refund_method="cash",
        actor="op",
        idempotency_key=key,
    )


def hours(count: float, start: datetime = T0) -> datetime:
    return start + timedelta(hours=count)


# --- meter replacement -------------------------------------------------------------------------


def test_a_replaced_meter_keeps_pricing_along_the_lots_and_a_late_old_reading_too(
    db: Database, clock: FakeClock
) -> None:
    """Use on the new device follows the use on the old one along the lots (it does not start
    again at the first lot); a late reading of the old device, measured before the replacement,
    gives the same books as the readings in order."""
    twins = [quantity_account(db, number=f"Q-{n}", org_name=f"Org {n}") for n in (1, 2)]
    buy_at = hours(6)
    for number, setup in enumerate(twins):
        ingestor = Ingestor(db)
        first = ["102", "104.5", "106"] if number == 0 else ["102", "106"]
        times = [hours(1), hours(3), hours(4)] if number == 0 else [hours(1), hours(4)]
        ingestor.ingest(
            [reading(setup.meter_id, at, v) for at, v in zip(times, first, strict=True)]
        )
        clock.now = hours(5)
        corrections.replace_meter(
            db,
            organisation_id=setup.org.id,
            replacement=corrections.Replacement(setup.meter_id, hours(5), D("107"), D("0")),
            actor="op",
            ingestor=ingestor,
        )
        clock.now = buy_at
        buy(db, setup, "30.00", f"r-{number}")  # 6 m³ more at 5.00
        ingestor.ingest([reading(setup.meter_id, hours(8), "9")])
        if number == 1:  # the old device's reading from before the replacement, late
            ingestor.ingest([reading(setup.meter_id, hours(3), "104.5")])
        clock.now = T0
    calm, mixed = twins
    view = consistent(db, calm)
    assert (view.used, view.left) == (D(16), D(0))  # 7 on the old device, 9 on the new
    assert consistent(db, mixed) == view
    assert active_lines(db, calm.meter_id) == active_lines(db, mixed.meter_id)
    check_books(db)


# --- tariff change ------------------------------------------------------------------------------


def test_a_change_to_a_tiered_tariff_then_a_purchase_and_late_readings_before_the_switch(
    db: Database, clock: FakeClock
) -> None:
    twins = [
        quantity_account(db, credit="20.00", number=f"Q-{n}", org_name=f"Org {n}") for n in (1, 2)
    ]
    for number, setup in enumerate(twins):
        ingestor = Ingestor(db)
        early = [(hours(1), "101.5"), (hours(2), "103")]
        arriving = early[1:] if number else early  # the twin gets the first one late
        ingestor.ingest([reading(setup.meter_id, at, v) for at, v in arriving])
        tiered = make_tariff(db, setup.org, "tiers", water_tiers())
        clock.now = hours(2.5)
        tariff_changes.change_tariff(
            db,
            organisation_id=setup.org.id,
            account_id=setup.account.account_id,
            meter_id=setup.meter_id,
            tariff_id=tiered,
            actor="op",
            idempotency_key=f"t-{number}",
        )
        # 3 m³ used this month and 1 unused: the purchase starts at 4 on the ladder, 6 m³ at
        # 3.00 up to 10 (18.00), then 12.00 at 4.00 = 3 m³.
        buy(db, setup, "30.00", f"r-{number}")
        if number:
            ingestor.ingest([reading(setup.meter_id, *early[0])])  # late, before the switch
        ingestor.ingest([reading(setup.meter_id, hours(4), "108")])
        clock.now = T0
    calm, mixed = twins
    view = consistent(db, calm)
    assert [(b.quantity, b.price) for b in view.blocks[1:]] == [
        (D(4), D("5.00")),
        (D(6), D("3.00")),
        (D(3), D("4.00")),
    ]
    assert view.left == D(5)
    assert consistent(db, mixed) == view
    assert active_lines(db, calm.meter_id) == active_lines(db, mixed.meter_id)
    check_books(db)


# --- closing ------------------------------------------------------------------------------------


def test_closing_in_overdraft_leaves_arrears_for_the_quantity_used_ahead(
    db: Database, clock: FakeClock
) -> None:
    setup = quantity_account(db, credit="10.03")  # 2 m³ at 5.00, 0.03 carried
    Ingestor(db).ingest([reading(setup.meter_id, hours(1), "103")])
    assert consistent(db, setup).left == D(-1)
    assert supply(db, setup) == "off"
    clock.now = hours(2)
    closed = close(db, setup, "103.5")
    # 3.5 m³ used: 2 bought, 1.5 used ahead at 5.00 = 7.50, less the 0.03 carried
    assert (closed.refunded, closed.arrears) == (D(0), D("7.47"))
    view = held(db, setup.account.account_id)
    assert (view.left, view.remainder) == (D("-1.5"), D(0))
    assert wallet(db, setup.account) == 0
    check_books(db)


def test_closing_with_a_remainder_pays_it_back(db: Database, clock: FakeClock) -> None:
    setup = quantity_account(db, credit="10.04")  # 2 m³ at 5.00, 0.04 carried
    Ingestor(db).ingest([reading(setup.meter_id, hours(1), "100.5")])
    consistent(db, setup)
    clock.now = hours(2)
    closed = close(db, setup, "100.5")
    assert (closed.refunded, closed.arrears) == (D("7.54"), D(0))
    rows = lot_rows(db, setup.account.account_id)
    assert close(db, setup, "100.5") == closed  # replayed: answered, nothing taken twice
    assert lot_rows(db, setup.account.account_id) == rows
    view = held(db, setup.account.account_id)
    assert (view.left, view.remainder, wallet(db, setup.account)) == (D(0), D(0), D(0))
    check_books(db)


# --- a released jump ----------------------------------------------------------------------------


def test_a_released_jump_is_priced_along_the_lots_once(db: Database, clock: FakeClock) -> None:
    setup = quantity_account(db, max_rate="2")
    ingestor = Ingestor(db)
    ingestor.ingest([reading(setup.meter_id, hours(1), "101")])
    ingestor.ingest([reading(setup.meter_id, hours(2), "108")])  # 7 m³ in an hour: a jump
    (item,) = quarantined(db, setup.org)
    assert consistent(db, setup).left == D(9)
    clock.now = hours(3)
    buy(db, setup, "10.00", "r-2")
    corrections.release(db, organisation_id=setup.org.id, quarantine_id=item["id"], actor="op")
    ingestor.ingest([reading(setup.meter_id, hours(4), "109")])
    view = consistent(db, setup)
    assert (view.used, view.left) == (D(9), D(3))
    check_books(db)


# --- months, and a long account -----------------------------------------------------------------


@pytest.mark.parametrize("keep_state", [True, False])
def test_months_of_use_are_all_counted_from_the_opening(
    db: Database, clock: FakeClock, keep_state: bool
) -> None:
    """Fourteen months of readings every ten days, a purchase each month, a price rise, some
    readings late across a month boundary (local time): the lots see every month."""
    setup = quantity_account(db, credit="100.00")
    ingestor = Ingestor(db, keep_state=keep_state)
    total, late = D(100), []
    for step in range(1, 43):
        at = T0 + timedelta(days=10 * step, hours=step % 5)
        total += D("3.25")
        if step % 7 == 3:
            late.append(reading(setup.meter_id, at, total))
            continue
        ingestor.ingest([reading(setup.meter_id, at, total), *late])
        late = []
        if step % 3 == 0:
            clock.now = at + timedelta(hours=1)
            buy(db, setup, "50.00", f"r-{step}")
        if step == 20:
            tariffs.add_version(
                db,
                organisation_id=setup.org.id,
                tariff_id=setup.tariff_id,
                version={"effective_from": "2027-06-01", "prices": {"flat": "5.50"}},
                actor="op",
            )
        consistent(db, setup)
    assert held(db, setup.account.account_id).used == D("136.50")
    check_books(db)


# --- replays and reversals ----------------------------------------------------------------------


def test_replayed_desk_entries_add_and_take_no_lot_twice(db: Database, clock: FakeClock) -> None:
    setup = quantity_account(db)  # 10 m³
    Ingestor(db).ingest([reading(setup.meter_id, hours(1), "103")])
    rows = lot_rows(db, setup.account.account_id)
    first = buy(db, setup, "20.00", "r-2")
    assert buy(db, setup, "20.00", "r-2") == first
    assert lot_rows(db, setup.account.account_id) == rows + 1
    back = refund(db, setup, "5.00", "f-1")
    assert refund(db, setup, "5.00", "f-1") == back
    assert lot_rows(db, setup.account.account_id) == rows + 2

    def undo() -> int:
        return cashier_refund.reverse(
            db, organisation_id=setup.org.id, transfer_id=back, actor="op", idempotency_key="v-1"
        )

    reversal = undo()
    assert undo() == reversal
    assert lot_rows(db, setup.account.account_id) == rows + 3
    assert consistent(db, setup).left == D(11)
    check_books(db)


def test_a_partly_used_purchase_is_not_reversed(db: Database, clock: FakeClock) -> None:
    setup = quantity_account(db)  # 10 m³ at 5.00
    clock.now = hours(1)
    second = buy(db, setup, "20.00", "r-2")  # 4 m³ more
    Ingestor(db).ingest([reading(setup.meter_id, hours(2), "112")])  # 2 of the 4 used
    before = consistent(db, setup)
    with pytest.raises(InsufficientFundsError) as refused:
        cashier_refund.reverse(
            db, organisation_id=setup.org.id, transfer_id=second, actor="op", idempotency_key="v"
        )
    assert str(refused.value) == (
        f"recharge {second} of 20.00 cannot be reversed: account {setup.account.number} has "
        "already used 2.00 m³ of the 4.00 m³ it bought (a reversal takes back the recharge's own "
        "quantity, whole); refund what is left instead"
    )
    assert consistent(db, setup) == before  # refused: nothing changed
    check_books(db)


def test_a_reversal_of_an_unused_purchase_after_use_of_older_lots(
    db: Database, clock: FakeClock
) -> None:
    setup = quantity_account(db)  # 10 m³ at 5.00
    Ingestor(db).ingest([reading(setup.meter_id, hours(1), "106")])
    tariffs.add_version(
        db,
        organisation_id=setup.org.id,
        tariff_id=setup.tariff_id,
        version={"effective_from": "2026-11-03", "prices": {"flat": "6.00"}},
        actor="op",
    )
    clock.now = T0 + timedelta(days=2)
    second = buy(db, setup, "24.00", "r-2")  # 4 m³ at 6.00
    Ingestor(db).ingest([reading(setup.meter_id, clock.now + timedelta(hours=1), "107")])
    cashier_refund.reverse(
        db, organisation_id=setup.org.id, transfer_id=second, actor="op", idempotency_key="v"
    )
    view = consistent(db, setup)
    assert (view.left, wallet(db, setup.account)) == (D(3), D(15))
    check_books(db)


# --- a purchase too small to buy a step ---------------------------------------------------------


def test_a_remainder_only_purchase_and_its_refund(db: Database, clock: FakeClock) -> None:
    setup = quantity_account(db, credit="0")
    buy(db, setup, "0.04", "r-1")
    view = consistent(db, setup)
    assert (view.left, view.remainder, wallet(db, setup.account)) == (D(0), D("0.04"), D("0.04"))
    assert supply(db, setup) == "off"  # 4 fen is no quantity
    refund(db, setup, "0.04", "f-1")
    view = consistent(db, setup)
    assert (view.remainder, wallet(db, setup.account)) == (D(0), D(0))
    buy(db, setup, "0.04", "r-2")
    buy(db, setup, "4.98", "r-3")  # with the 4 carried: 5.02 → 1 m³, 0.02 carried
    view = consistent(db, setup)
    assert (view.left, view.remainder) == (D(1), D("0.02"))
    refund(db, setup, "5.02", "f-2")  # all of it: the 2 carried, then the 1 m³
    view = consistent(db, setup)
    assert (view.left, view.remainder, wallet(db, setup.account)) == (D(0), D(0), D(0))
    check_books(db)


# --- tier modes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["adder", "price"])
def test_tier_modes_and_yearly_tiers(db: Database, clock: FakeClock, mode: str) -> None:
    setup = quantity_account(db, definition=water_tiers("year", mode), credit="0")
    ingestor = Ingestor(db)
    ingestor.ingest([reading(setup.meter_id, hours(1), "108")])  # 8 m³ at the opening price
    clock.now = T0 + timedelta(days=40)  # December: the year's 8 m³ still count
    buy(db, setup, "60.00", "r-1")
    view = consistent(db, setup)
    # 8 bought back at 3.00 (24.00); 36.00 from 8 on the ladder: 2 at 3.00 (6.00), 30.00 at
    # 4.00 (adder: 3.00 + 1.00) = 7.5
    assert [(b.quantity, b.price) for b in view.blocks[1:]] == [
        (D(8), D("3.00")),
        (D(2), D("3.00")),
        (D("7.50"), D("4.00")),
    ]
    ingestor.ingest([reading(setup.meter_id, clock.now + timedelta(hours=1), "112")])
    assert consistent(db, setup).left == D("5.5")
    check_books(db)


# --- two accounts in turn on one meter ----------------------------------------------------------


def test_two_quantity_accounts_in_turn_on_one_meter(db: Database, clock: FakeClock) -> None:
    first = quantity_account(db, credit="20.00")  # 4 m³
    ingestor = Ingestor(db)
    ingestor.ingest([reading(first.meter_id, hours(1), "103")])
    clock.now = hours(2)
    close(db, first, "103")
    clock.now = hours(3)
    account = open_account(
        db,
        first.org,
        "Q-2",
        [(first.meter_id, first.tariff_id, "103.5")],
        credit="10.00",
        credit_unit="quantity",
    )
    second = Setup(first.org, first.meter_id, first.tariff_id, account)
    ingestor.ingest([reading(first.meter_id, hours(4), "105")])
    view = consistent(db, second)
    assert (view.used, view.left) == (D("1.5"), D("0.5"))
    assert held(db, first.account.account_id).used == D(3)
    check_books(db)


# --- faults found -------------------------------------------------------------------------------


def test_a_refund_after_a_remainder_only_purchase_takes_the_quantity_below_it(
    db: Database, clock: FakeClock
) -> None:
    """A purchase too small to buy a step records an empty block on top of the plan; a refund
    must look past it to the unused quantity below."""
    setup = quantity_account(db)  # 10 m³ at 5.00
    buy(db, setup, "0.04", "r-2")  # 4 fen: remainder only
    refund(db, setup, "10.04", "f-1")  # the 4 fen, then 2 m³
    view = consistent(db, setup)
    assert (view.left, view.remainder, wallet(db, setup.account)) == (D(8), D(0), D(40))
    check_books(db)


FREE_FIRST = {
    "utility": "water",
    "versions": [
        {
            "effective_from": "2026-01-01",
            "prices": {},
            "tiers": {
                "period": "month",
                "mode": "price",
                "blocks": [{"up_to": "10", "price": "0"}, {"up_to": None, "price": "5.00"}],
            },
        }
    ],
}


def test_use_beyond_a_free_block_is_not_free(db: Database, clock: FakeClock) -> None:
    """A free allowance (a tier block at price 0) is bounded: use beyond the plan after it, or
    before any purchase beyond it, is charged at the price the next quantity would be bought at,
    not at 0."""
    setup = quantity_account(db, definition=FREE_FIRST, credit="0")
    Ingestor(db).ingest([reading(setup.meter_id, hours(1), "115")])
    view = consistent(db, setup)
    assert view.left == D(-15)
    assert wallet(db, setup.account) - owed(db, setup.account) < 0  # not 15 m³ for nothing
    assert supply(db, setup) == "off"


def test_a_purchase_of_only_the_free_block_leaves_no_free_overdraft(
    db: Database, clock: FakeClock
) -> None:
    setup = quantity_account(db, definition=FREE_FIRST, credit="0.03")  # 10 m³ free, 3 fen
    view = consistent(db, setup)
    assert (view.left, view.remainder) == (D(10), D("0.03"))
    Ingestor(db).ingest([reading(setup.meter_id, hours(1), "112")])
    view = consistent(db, setup)
    assert view.left == D(-2)
    assert wallet(db, setup.account) - owed(db, setup.account) == D("-9.97")  # 2 m³ at 5.00
    assert supply(db, setup) == "off"
    buy(db, setup, "20.00", "r-2")  # buys back the 2 m³ at 5.00, then 2 m³ more
    view = consistent(db, setup)
    assert (view.left, view.remainder) == (D(2), D("0.03"))
    assert supply(db, setup) == "on"
    check_books(db)


def test_quantity_used_up_by_use_that_posts_no_money_still_cuts(
    db: Database, clock: FakeClock
) -> None:
    """The free allowance used up posts no fen, but the quantity is gone: the supply is cut."""
    setup = quantity_account(db, definition=FREE_FIRST, credit="0.03")  # 10 m³ free
    assert supply(db, setup) == "on"
    Ingestor(db).ingest([reading(setup.meter_id, hours(1), "110")])
    view = consistent(db, setup)
    assert (view.left, wallet(db, setup.account)) == (D(0), D("0.03"))
    assert supply(db, setup) == "off"


def test_an_opening_before_a_stored_reading_prices_it_along_the_opening_lot(
    db: Database, clock: FakeClock
) -> None:
    """The meter reported ahead of the desk's clock (a reading stored before the account opened,
    measured after the opening): the opening reading is late, and the interval after it is
    priced by the new account's lots, which must exist by then."""
    org = make_org(db)
    tariff_id = make_tariff(db, org, definition=flat_definition("5.00", utility="water"))
    meter_id = make_meter(db, org, utility="water")
    Ingestor(db).ingest([reading(meter_id, hours(1), "103")])
    account = open_account(
        db, org, "Q-1", [(meter_id, tariff_id, "100")], credit="50.00", credit_unit="quantity"
    )
    setup = Setup(org, meter_id, tariff_id, account)
    view = consistent(db, setup)
    assert (view.used, view.left) == (D(3), D(7))
    check_books(db)


def test_a_time_of_use_version_is_refused_on_a_quantity_accounts_tariff(
    db: Database, clock: FakeClock
) -> None:
    setup = quantity_account(db, definition=flat_definition("5.00"))  # electricity
    with pytest.raises(ValidationError, match="not time-of-use"):
        tariffs.add_version(
            db,
            organisation_id=setup.org.id,
            tariff_id=setup.tariff_id,
            version={
                "effective_from": "2026-11-03",
                "prices": {"peak": "6", "valley": "4"},
                "seasons": [
                    {
                        "name": "all",
                        "months": list(range(1, 13)),
                        "workday": [["00:00", "valley"], ["08:00", "peak"]],
                    }
                ],
            },
            actor="op",
        )
