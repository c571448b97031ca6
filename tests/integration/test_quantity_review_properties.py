"""Quantity credit (购量) as properties on tiered water with a free allowance (review, sitting
18): the harness of ``test_quantity_properties.py`` (purchases, refunds, price changes, readings
shuffled, repeated and late, then a close), on a tariff whose first block is free and whose
purchases cross tier blocks. An account fed its readings out of order ends as one fed them in
order, the money matches the lots after every step, and use beyond the plan is never free.

SQLite only, a fresh file per example, as the flat harness.
"""

from __future__ import annotations

import random
import tempfile
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from builders import T0, Setup, make_meter, make_org, make_tariff, open_account, reading
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_quantity_properties import Phase, _act, _money_matches_lots, phases

from meterdesk.billing import accounts, quantity
from meterdesk.billing.ingest import Ingestor
from meterdesk.db.database import Database
from meterdesk.db.engine import build_engine
from meterdesk.db.metadata import load_all_tables
from meterdesk.shared.time import FakeClock

pytestmark = [pytest.mark.integration, pytest.mark.slow]

D = Decimal
FREE_THEN_TIERS = {
    "utility": "water",
    "versions": [
        {
            "effective_from": "2026-01-01",
            "prices": {},
            "tiers": {
                "period": "month",
                "mode": "price",
                "blocks": [
                    {"up_to": "3", "price": "0"},
                    {"up_to": "8", "price": "3.70"},
                    {"up_to": None, "price": "5.10"},
                ],
            },
        }
    ],
}


def _account(db: Database, number: str, org_name: str, credit: Decimal) -> Setup:
    org = make_org(db, org_name)
    tariff_id = make_tariff(db, org, definition=FREE_THEN_TIERS)
    meter_id = make_meter(db, org, utility="water")
    account = open_account(
        db, org, number, [(meter_id, tariff_id, "100")], credit=f"{credit}", credit_unit="quantity"
    )
    return Setup(org, meter_id, tariff_id, account)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    plan=phases,
    credit=st.decimals(min_value=0, max_value=20, places=2),
    rng=st.randoms(use_true_random=False),
)
def test_tiers_with_a_free_allowance_keep_order_and_money(
    plan: list[Phase], credit: Decimal, rng: random.Random
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        engine = build_engine(f"sqlite:///{Path(folder) / 'q.sqlite3'}")
        load_all_tables().create_all(engine)
        clock = FakeClock(T0)
        db = Database(engine=engine, clock=clock)
        try:
            _run(db, clock, plan, credit, rng)
        finally:
            engine.dispose()


def _run(
    db: Database, clock: FakeClock, plan: list[Phase], credit: Decimal, rng: random.Random
) -> None:
    calm, mixed = _account(db, "Q-1", "A", credit), _account(db, "Q-2", "B", credit)
    calm_ingest, mixed_ingest = Ingestor(db), Ingestor(db)
    total, late = D(100), []
    for number, phase in enumerate(plan):
        day = T0 + timedelta(days=number * 9)  # some phases in the next month: a new allowance
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
            _money_matches_lots(db, setup)
            with db.read() as conn:
                assert quantity.view(conn, setup.account.account_id).price > 0
    mixed_ingest.ingest([reading(mixed.meter_id, at, value) for at, value in late])
    with db.read() as conn:
        assert quantity.view(conn, calm.account.account_id) == quantity.view(
            conn, mixed.account.account_id
        )
    for setup in (calm, mixed):
        _money_matches_lots(db, setup)
        accounts.close_account(
            db,
            organisation_id=setup.org.id,
            number=setup.account.number,
            final_readings=[accounts.FinalReading(setup.meter_id, total)],
            refund_method="cash",
            actor="op",
            idempotency_key=f"close-{setup.account.number}",
        )
