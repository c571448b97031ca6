"""Quantity credit (购量) as properties on tiered water with a free allowance (review, sitting
17): the harness of ``test_quantity_properties.py`` (purchases, refunds, price changes, readings
shuffled, repeated and late, then a close), on a tariff whose first block is free and whose
purchases cross tier blocks. An account fed its readings out of order ends as one fed them in
order, the money matches the lots after every step, and use beyond the plan is never free.

SQLite only, a fresh file per example, as the flat harness.
"""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_quantity_properties import Phase, phases, run_on_a_fresh_database

pytestmark = [pytest.mark.integration, pytest.mark.slow]

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
    # phases 9 days apart: some fall in the next month, with a new free allowance
    run_on_a_fresh_database(plan, credit, rng, definition=FREE_THEN_TIERS, days_apart=9)
