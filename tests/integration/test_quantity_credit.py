"""Quantity credit (购量, F-MODE, decision 0006) through the service paths, on SQLite and
PostgreSQL: a purchase becomes quantity at the price in force, use is priced by the lots (a
price rise never shrinks what was bought), overdraft is bought back at the price it was charged,
the valve closes when the quantity is gone and opens when more is bought, refunds and closing
take the newest unused quantity back at its own price — and reordered or repeated readings give
the same books."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from builders import (
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
    reading,
    wallet,
)
from test_money_races import held_before, racing

from meterdesk.billing import accounts, cashier, cashier_refund, control_admin, quantity
from meterdesk.billing.control_state import load_state
from meterdesk.billing.ingest import Ingestor
from meterdesk.billing.quantity import QuantityView
from meterdesk.db.database import Database
from meterdesk.shared.errors import ConflictError, InsufficientFundsError, ValidationError
from meterdesk.shared.time import FakeClock
from meterdesk.tariffs import service as tariffs

pytestmark = pytest.mark.integration

WATER_TIERS = {
    "utility": "water",
    "versions": [
        {
            "effective_from": "2026-01-01",
            "prices": {},
            "tiers": {
                "period": "month",
                "mode": "price",
                "blocks": [
                    {"up_to": "10", "price": "3.00"},
                    {"up_to": "20", "price": "4.00"},
                    {"up_to": None, "price": "6.00"},
                ],
            },
        }
    ],
}


def quantity_account(
    db: Database,
    *,
    definition: dict[str, Any] | None = None,
    credit: str = "50.03",
    number: str = "Q-1",
    org_name: str = "Org A",
    max_rate: str | None = None,
) -> Setup:
    """A quantity account on a new meter of the definition's utility (water at 5.00 without
    one), opened at register 100."""
    definition = definition or flat_definition("5.00", utility="water")
    org = make_org(db, org_name)
    tariff_id = make_tariff(db, org, definition=definition)
    meter_id = make_meter(db, org, utility=definition["utility"], max_rate=max_rate)
    account = open_account(
        db, org, number, [(meter_id, tariff_id, "100")], credit=credit, credit_unit="quantity"
    )
    return Setup(org, meter_id, tariff_id, account)


def held(db: Database, setup: Setup) -> QuantityView:
    with db.read() as conn:
        return quantity.view(conn, setup.account.account_id)


def buy(db: Database, setup: Setup, amount: str, key: str) -> int:
    return cashier.recharge(
        db,
        organisation_id=setup.org.id,
        account_id=setup.account.account_id,
        amount=amount,
        method="cash",
        actor="cashier",
        idempotency_key=key,
    ).transfer_id


def supply(db: Database, setup: Setup) -> str:
    """What the control loop decided for the supply (the meters here are read by hand, so no
    valve command goes out; the decision is the same)."""
    with db.read() as conn:
        return str(load_state(conn, setup.account.account_id)[0].supply)


def test_bought_quantity_keeps_its_price_and_overdraft_is_bought_back(
    db: Database, clock: FakeClock
) -> None:
    setup = quantity_account(db)  # 50.03 at 5.00 → 10.00 m³, 3 fen carried
    view = held(db, setup)
    assert (view.unit, view.left, view.remainder, wallet(db, setup.account)) == (
        "m³",
        D("10.00"),
        D("0.03"),
        D("50.03"),
    )
    ingestor = Ingestor(db)
    ingestor.ingest([reading(setup.meter_id, clock.now + timedelta(hours=1), "104")])
    assert (held(db, setup).left, wallet(db, setup.account)) == (D("6.00"), D("30.03"))

    # The price rises to 6.00 from tomorrow: the 6 m³ left stay 6 m³ at 5.00.
    tariffs.add_version(
        db,
        organisation_id=setup.org.id,
        tariff_id=setup.tariff_id,
        version={"effective_from": "2026-11-03", "prices": {"flat": "6.00"}},
        actor="op",
    )
    clock.advance(timedelta(days=2))
    buy(db, setup, "60.00", "r-2")  # 60.03 at 6.00 → 10.00 m³, 3 fen carried again
    assert (held(db, setup).left, held(db, setup).remainder) == (D("16.00"), D("0.03"))
    ingestor.ingest([reading(setup.meter_id, clock.now + timedelta(hours=1), "116")])
    # 6 m³ at 5.00 and 6 m³ at 6.00
    assert (held(db, setup).left, wallet(db, setup.account)) == (D("4.00"), D("24.03"))

    # 5 m³ more: 4 left and 1 used ahead at the last price; the supply is cut.
    ingestor.ingest([reading(setup.meter_id, clock.now + timedelta(hours=2), "121")])
    view = held(db, setup)
    assert view.left == D("-1.00")
    assert wallet(db, setup.account) + -owed(db, setup.account) == D("-5.97")
    assert supply(db, setup) == "off"

    # 12.00 buys back the 1 m³ at 6.00 and 1 m³ more; the supply is restored.
    buy(db, setup, "12.00", "r-3")
    view = held(db, setup)
    assert (view.left, view.remainder) == (D("1.00"), D("0.03"))
    assert supply(db, setup) == "on"
    check_books(db)


def test_a_purchase_crossing_a_water_tier_is_split_over_both_prices(
    db: Database, clock: FakeClock
) -> None:
    setup = quantity_account(db, definition=WATER_TIERS, credit="0")
    Ingestor(db).ingest([reading(setup.meter_id, clock.now + timedelta(hours=1), "104")])
    assert held(db, setup).left == D("-4")  # used before buying: at the opening price, 3.00
    buy(db, setup, "50.00", "r-1")
    view = held(db, setup)
    # 4 m³ bought back at 3.00 (12.00); 38.00 from 4 m³ used this month: 6 m³ at 3.00 (18.00)
    # up to the 10 m³ bound, then 20.00 at 4.00 = 5 m³.
    assert [(b.quantity, b.price) for b in view.blocks[1:]] == [
        (D("4"), D("3.00")),
        (D("6"), D("3.00")),
        (D("5.00"), D("4.00")),
    ]
    assert (view.left, view.remainder, wallet(db, setup.account)) == (D("11.00"), D(0), D("38.00"))
    check_books(db)


def test_refunds_and_closing_pay_back_the_newest_quantity_at_its_own_price(
    db: Database, clock: FakeClock
) -> None:
    setup = quantity_account(db)  # 10.00 m³ at 5.00 + 0.03
    tariffs.add_version(
        db,
        organisation_id=setup.org.id,
        tariff_id=setup.tariff_id,
        version={"effective_from": "2026-11-03", "prices": {"flat": "6.00"}},
        actor="op",
    )
    clock.advance(timedelta(days=2))
    buy(db, setup, "30.00", "r-2")  # 30.03 → 5.00 m³ at 6.00, 0.03 carried
    org, account = setup.org.id, setup.account.account_id

    def refund(amount: str, key: str) -> int:
        return cashier_refund.refund(
            db,
            organisation_id=org,
            account_id=account,
            amount=amount,
            method="cash",
            actor="cashier",
            idempotency_key=key,
        ).transfer_id

    refund("12.03", "f-1")  # the 0.03 carried, then 2 m³ of the newest block at 6.00
    view = held(db, setup)
    assert (view.left, view.remainder, wallet(db, setup.account)) == (D("13.00"), D(0), D("68.00"))
    with pytest.raises(InsufficientFundsError, match=r"only 68\.00 can be refunded"):
        refund("68.01", "f-2")
    assert held(db, setup).left == D("13.00")  # the refused refund changed nothing
    # A recharge reversed takes back quantity worth it: 18.00 = 3 m³ at 6.00
    reversal = cashier_refund.reverse(
        db,
        organisation_id=org,
        transfer_id=refund("6.00", "f-3"),
        actor="op",
        idempotency_key="v-1",
    )
    assert reversal > 0
    assert held(db, setup).left == D("13.00")  # the refund of 1 m³ undone: bought again at 6.00
    Ingestor(db).ingest([reading(setup.meter_id, clock.now + timedelta(hours=1), "103")])
    accounts.close_account(
        db,
        organisation_id=org,
        number="Q-1",
        final_readings=[accounts.FinalReading(setup.meter_id, D("103"))],
        refund_method="cash",
        actor="op",
        idempotency_key="close-1",
    )
    # 3 m³ used at 5.00 of 68.00: 53.00 paid back, and nothing is left to use
    assert wallet(db, setup.account) == D(0)
    assert (held(db, setup).left, held(db, setup).remainder) == (D(0), D(0))
    check_books(db)


def test_quantity_credit_is_refused_where_it_cannot_work(db: Database) -> None:
    org = make_org(db)
    tou = make_tariff(
        db,
        org,
        "tou",
        {
            "utility": "electricity",
            "versions": [
                {
                    "effective_from": "2026-01-01",
                    "prices": {"peak": "1", "valley": "0.5"},
                    "seasons": [
                        {
                            "name": "all",
                            "months": list(range(1, 13)),
                            "workday": [["00:00", "valley"], ["08:00", "peak"]],
                        }
                    ],
                }
            ],
        },
    )
    flat = make_tariff(db, org, "flat", flat_definition("1"))
    one, two = make_meter(db, org, "M1"), make_meter(db, org, "M2")
    with pytest.raises(ValidationError, match="not time-of-use"):
        open_account(db, org, "Q-1", [(one, tou, "1")], credit_unit="quantity")
    with pytest.raises(ValidationError, match="holds one meter, not 2"):
        open_account(db, org, "Q-2", [(one, flat, "1"), (two, flat, "1")], credit_unit="quantity")
    with pytest.raises(ValidationError, match="overdraft_limit: a quantity-credit account"):
        open_account(db, org, "Q-5", [(one, flat, "1")], credit_unit="quantity", overdraft="5")
    with pytest.raises(ValidationError, match="'money' or 'quantity'"):
        open_account(db, org, "Q-3", [(one, flat, "1")], credit_unit="kwh")
    opened = open_account(db, org, "Q-4", [(one, flat, "1")], credit_unit="quantity")
    with pytest.raises(ConflictError, match="buys quantity"):
        control_admin.take_emergency_credit(
            db, organisation_id=org.id, number="Q-4", actor="op", outbox=_NoOutbox()
        )
    assert opened.account_id > 0


class _NoOutbox:
    def send(self, *args: object, **kwargs: object) -> None:  # pragma: no cover - refused first
        raise AssertionError("nothing may be sent")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reordered_and_repeated_readings_give_the_same_books(
    db: Database, clock: FakeClock, seed: int
) -> None:
    """Two identical accounts: one gets its readings in order, the other shuffled (some
    arriving after a purchase they were measured before) and partly twice. Each purchase comes
    after the newest reading before it, as a gateway's HISTORY would deliver it."""
    calm = quantity_account(db, credit="20.00")
    mixed = quantity_account(db, credit="20.00", number="Q-2", org_name="Org B")
    rng = random.Random(seed)
    start = clock.now
    phases: list[list[tuple[timedelta, str]]] = []
    total = D(100)
    for phase in range(3):
        steps = []
        for step in range(1, 9):
            total += D(rng.randint(0, 900)).scaleb(-3)
            steps.append((timedelta(hours=phase * 10 + step), f"{total}"))
        phases.append(steps)
    calm_ingest, mixed_ingest = Ingestor(db), Ingestor(db)
    late: list[tuple[timedelta, str]] = []
    for number, steps in enumerate(phases):
        calm_ingest.ingest([reading(calm.meter_id, start + at, value) for at, value in steps])
        newest, others = steps[-1], steps[:-1]
        rng.shuffle(others)
        now, later = others[: len(others) // 2], others[len(others) // 2 :]
        batch = [*late, *now, newest, *rng.sample(now, min(2, len(now)))]
        rng.shuffle(batch)
        mixed_ingest.ingest([reading(mixed.meter_id, start + at, value) for at, value in batch])
        late = later
        for setup in (calm, mixed):
            buy(db, setup, "7.77", f"r-{setup.account.number}-{number}")
    mixed_ingest.ingest([reading(mixed.meter_id, start + at, value) for at, value in late])
    assert held(db, calm) == held(db, mixed)
    assert wallet(db, calm.account) == wallet(db, mixed.account)
    assert owed(db, calm.account) == owed(db, mixed.account)
    for money in ("cost", "unit_price"):
        assert active_lines(db, calm.meter_id, money) == active_lines(db, mixed.meter_id, money)
    check_books(db)


def test_a_batch_racing_a_purchase_is_priced_by_the_plan_the_purchase_leaves(
    db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purchase (buying back 2 m³ used ahead at 5.00, the rest at today's 6.00) is held after
    writing its lots, before committing; a batch of 3 m³ more arrives meanwhile. Priced by the
    plan before the purchase, the batch would charge those 3 m³ at 5.00 while the lots say 6.00
    (3.00 lost). It waits for the purchase's wallet lock and reads the plan it left."""
    setup = quantity_account(db, credit="0")
    ingestor = Ingestor(db)
    ingestor.ingest([reading(setup.meter_id, clock.now + timedelta(hours=1), "102")])
    tariffs.add_version(
        db,
        organisation_id=setup.org.id,
        tariff_id=setup.tariff_id,
        version={"effective_from": "2026-11-03", "prices": {"flat": "6.00"}},
        actor="op",
    )
    clock.advance(timedelta(days=2))
    buying = held_before(monkeypatch, cashier, "tell", lambda: buy(db, setup, "30.00", "r-1"))
    batch = racing(
        db,
        monkeypatch,
        lambda: ingestor.ingest([reading(setup.meter_id, clock.now + timedelta(hours=1), "105")]),
    )
    buying.release()
    batch.release()
    assert not isinstance(buying.outcome, Exception), buying.outcome
    assert not isinstance(batch.outcome, Exception), batch.outcome
    view = held(db, setup)
    # 2 m³ at 5.00 bought back (10.00), 20.00 at 6.00 = 3.33 m³; 3 m³ used of those
    assert (view.left, view.remainder) == (D("0.33"), D("0.02"))
    assert wallet(db, setup.account) - owed(db, setup.account) == D("2.00")  # 0.33 × 6 + 0.02
    check_books(db)
