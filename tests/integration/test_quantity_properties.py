"""Quantity credit (购量) as properties: whatever the purchases, refunds, price rises and order of
arrival, (1) an account fed its readings shuffled, repeated and partly late ends with the same
quantity, money and lines as one fed them in order, and (2) after every step the money matches
the lots: wallet net of arrears = what the unused quantity cost − what the used-ahead quantity
was charged + the remainder, within the running total's rounding (under one fen per month).

SQLite only, a fresh file per example: the property is about the pricing and the lots, which
the deterministic tests in ``test_quantity_credit.py`` run on PostgreSQL too.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import pytest
from builders import (
    SHANGHAI,
    T0,
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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterdesk.billing import accounts, cashier, cashier_refund, quantity
from meterdesk.billing.control_state import load_state
from meterdesk.billing.ingest import Ingestor
from meterdesk.db.database import Database
from meterdesk.db.engine import build_engine
from meterdesk.db.metadata import load_all_tables
from meterdesk.shared.time import FakeClock, local_date
from meterdesk.tariffs import service as tariffs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

D = Decimal
FEN = D("0.01")


@dataclass(frozen=True)
class Phase:
    steps: list[Decimal]  # register advances, in order
    action: str  # buy, refund, price or none
    amount: Decimal  # money for buy, fraction for refund, new price for price


phases = st.lists(
    st.builds(
        Phase,
        # steps large against the credit, and prices that move, so overdrafts are bought back
        # at a price other than today's
        st.lists(st.decimals(min_value=0, max_value=6, places=3), min_size=1, max_size=6),
        st.sampled_from(["buy", "buy", "refund", "price", "price", "none"]),
        st.decimals(min_value=D("0.01"), max_value=60, places=2),
    ),
    min_size=1,
    max_size=5,
)


FLAT_WATER = flat_definition("3.70", utility="water")


def _account(
    db: Database, number: str, org_name: str, credit: Decimal, definition: dict[str, Any]
) -> Setup:
    org = make_org(db, org_name)
    tariff_id = make_tariff(db, org, definition=definition)
    meter_id = make_meter(db, org, utility="water")
    account = open_account(
        db, org, number, [(meter_id, tariff_id, "100")], credit=f"{credit}", credit_unit="quantity"
    )
    return Setup(org, meter_id, tariff_id, account)


def money_matches_lots(db: Database, setup: Setup) -> None:
    with db.read() as conn:
        view = quantity.view(conn, setup.account.account_id)
        state = load_state(conn, setup.account.account_id)[0]
    net = wallet(db, setup.account) - owed(db, setup.account)
    expected = view.unused_value - max(-view.left, D(0)) * view.price + view.remainder
    assert abs(net - expected) < FEN, (net, expected, view)
    assert view.price > 0  # use beyond the plan is never free (a free allowance is bounded)
    if view.left >= FEN:  # never cut while quantity is left
        assert str(state.supply) == "on"


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    plan=phases,
    credit=st.decimals(min_value=0, max_value=20, places=2),
    rng=st.randoms(use_true_random=False),
)
def test_order_of_arrival_changes_nothing_and_money_always_matches_the_lots(
    plan: list[Phase], credit: Decimal, rng: random.Random
) -> None:
    run_on_a_fresh_database(plan, credit, rng, definition=FLAT_WATER, days_apart=1)


def run_on_a_fresh_database(
    plan: list[Phase],
    credit: Decimal,
    rng: random.Random,
    *,
    definition: dict[str, Any],
    days_apart: int,
) -> None:
    """Two identical quantity accounts on ``definition``, one phase every ``days_apart`` days:
    one fed its readings in order, one shuffled, repeated and partly late (the harness above)."""
    with tempfile.TemporaryDirectory() as folder:
        engine = build_engine(f"sqlite:///{Path(folder) / 'q.sqlite3'}")
        load_all_tables().create_all(engine)
        clock = FakeClock(T0)
        db = Database(engine=engine, clock=clock)
        try:
            _run(db, clock, plan, credit, rng, definition, days_apart)
        finally:
            engine.dispose()


def _run(
    db: Database,
    clock: FakeClock,
    plan: list[Phase],
    credit: Decimal,
    rng: random.Random,
    definition: dict[str, Any],
    days_apart: int,
) -> None:
    calm = _account(db, "Q-1", "A", credit, definition)
    mixed = _account(db, "Q-2", "B", credit, definition)
    calm_ingest, mixed_ingest = Ingestor(db), Ingestor(db)
    total, late = D(100), []
    for number, phase in enumerate(plan):
        day = T0 + timedelta(days=number * days_apart)
        stream = []
        for index, step in enumerate(phase.steps, start=1):
            total += step
            stream.append((day + timedelta(hours=index), total))
        calm_ingest.ingest([reading(calm.meter_id, at, value) for at, value in stream])
        newest, others = stream[-1], stream[:-1]
        rng.shuffle(others)
        keep = rng.randint(0, len(others))
        batch = [*late, *others[:keep], newest, *others[: min(2, keep)]]
        late = others[keep:]
        rng.shuffle(batch)
        mixed_ingest.ingest([reading(mixed.meter_id, at, value) for at, value in batch])
        clock.now = day + timedelta(hours=12)
        for setup in (calm, mixed):
            _act(db, setup, phase, number)
            money_matches_lots(db, setup)
    mixed_ingest.ingest([reading(mixed.meter_id, at, value) for at, value in late])
    with db.read() as conn:
        assert quantity.view(conn, calm.account.account_id) == quantity.view(
            conn, mixed.account.account_id
        )
    assert (wallet(db, calm.account), owed(db, calm.account)) == (
        wallet(db, mixed.account),
        owed(db, mixed.account),
    )
    assert active_lines(db, calm.meter_id) == active_lines(db, mixed.meter_id)
    for setup in (calm, mixed):
        money_matches_lots(db, setup)
        accounts.close_account(
            db,
            organisation_id=setup.org.id,
            number=setup.account.number,
            final_readings=[accounts.FinalReading(setup.meter_id, total)],
            refund_method="cash",
            actor="op",
            idempotency_key=f"close-{setup.account.number}",
        )
        with db.read() as conn:
            view = quantity.view(conn, setup.account.account_id)
        assert (view.left > 0, view.remainder, wallet(db, setup.account)) == (False, 0, 0)
    check_books(db)


def _act(db: Database, setup: Setup, phase: Phase, number: int) -> None:
    org, account = setup.org.id, setup.account.account_id
    if phase.action == "buy":
        cashier.recharge(
            db,
            organisation_id=org,
            account_id=account,
            amount=phase.amount,
            method="cash",
            actor="op",
            idempotency_key=f"buy-{number}",
        )
    elif phase.action == "refund":
        with db.read() as conn:
            view = quantity.view(conn, account)
        fraction = phase.amount / 60
        most = min(view.unused_value + view.remainder, wallet(db, setup.account))
        amount = (most * fraction).quantize(FEN, rounding=ROUND_FLOOR)
        if amount > 0:
            cashier_refund.refund(
                db,
                organisation_id=org,
                account_id=account,
                amount=amount,
                method="cash",
                actor="op",
                idempotency_key=f"refund-{number}",
            )
    elif phase.action == "price":  # from tomorrow (site time); each account has its tariff
        tomorrow = local_date(db.clock() + timedelta(days=1), SHANGHAI)
        tariffs.add_version(
            db,
            organisation_id=org,
            tariff_id=setup.tariff_id,
            version={"effective_from": f"{tomorrow}", "prices": {"flat": f"{phase.amount}"}},
            actor="op",
        )
