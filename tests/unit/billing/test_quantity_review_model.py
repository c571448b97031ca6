"""Quantity credit's rules where the review of sitting 17 found money faults: a free allowance
(a tier block at price 0) must not make use beyond the plan free, and an empty block on top of
the plan (a purchase too small to buy a step) must not hide the unused quantity below it."""

from __future__ import annotations

from datetime import date
from decimal import ROUND_FLOOR, Decimal

from hypothesis import given
from hypothesis import strategies as st

from meterdesk.billing.quantity_model import (
    Block,
    Piece,
    beyond_price,
    convert,
    opening_price,
    plan_from_rows,
    price_range,
    quantity_worth,
    unused_value,
)
from meterdesk.tariffs.model import TariffVersion, TierBlock, TierMode, TierPeriod, TierPlan

D = Decimal
FREE_FIRST = [(D(10), D(0)), (None, D("5.00"))]


def test_the_opening_price_skips_a_free_allowance() -> None:
    version = TariffVersion(
        date(2026, 1, 1),
        {},
        tiers=TierPlan(
            TierPeriod.MONTH,
            TierMode.PRICE,
            (TierBlock(D(10), D(0)), TierBlock(None, D("5.00"))),
        ),
    )
    assert opening_price(version) == D("5.00")


def test_use_beyond_a_free_block_costs_the_newest_price() -> None:
    # 3 fen buy the free 10 m³ and nothing priced: the plan ends with the free block
    bought = convert(D("0.03"), D(0), FREE_FIRST, D(0), D("5.00"))
    assert (bought.blocks, bought.remainder) == ((Block(D(10), D(0)),), D("0.03"))
    plan = (Block(D(0), D("5.00")), *bought.blocks)
    assert beyond_price(plan) == D("5.00")
    assert price_range(plan, D(0), D(12)) == [
        Piece(D(10), D(0), 1),
        Piece(D(2), D("5.00"), 1),
    ]


def test_a_refund_looks_past_an_empty_block_on_top() -> None:
    plan = (Block(D(0), D("5.00")), Block(D(10), D("5.00")), Block(D(0), D("5.00")))
    assert quantity_worth(plan, D(3), D("10.00")) == D(2)


@given(
    blocks=st.lists(
        st.tuples(
            st.decimals(min_value=0, max_value=20, places=2),
            st.sampled_from([D(0), D("3.00"), D("4.50")]),
        ),
        min_size=1,
        max_size=5,
    ),
    used=st.decimals(min_value=0, max_value=120, places=3),
    split=st.decimals(min_value=0, max_value=1, places=2),
)
def test_pricing_in_two_parts_is_pricing_at_once(
    blocks: list[tuple[Decimal, Decimal]], used: Decimal, split: Decimal
) -> None:
    """F depends on the cumulative use only, beyond the plan too: any split of the same use
    costs the same, and nothing beyond the plan is free while a block has a price."""
    plan = (Block(D(0), D("5.00")), *(Block(q, p) for q, p in blocks))
    first = (used * split).quantize(D("0.001"))
    whole = sum((p.quantity * p.price for p in price_range(plan, D(0), used)), D(0))
    parts = price_range(plan, D(0), first) + price_range(plan, first, used - first)
    assert sum((p.quantity * p.price for p in parts), D(0)) == whole
    assert sum((p.quantity for p in parts), D(0)) == used
    beyond = price_range(plan, sum((b.quantity for b in plan), D(0)), D(1))
    assert [p.price for p in beyond] == [beyond_price(plan)] and beyond_price(plan) > 0


STEPS = [(D(10), D(0)), (D(20), D("4.00")), (None, D("6.00"))]


@given(
    actions=st.lists(
        st.tuples(
            st.sampled_from(["buy", "use", "use", "refund"]),
            st.decimals(min_value=D("0.01"), max_value=80, places=2),
        ),
        max_size=12,
    )
)
def test_what_was_charged_is_always_the_plan_price_of_the_use(
    actions: list[tuple[str, Decimal]],
) -> None:
    """Purchases along tiers with a free allowance (overdraft bought back first), use priced as
    it comes, refunds off the end: whatever the order, what was charged for the use is the
    current plan's price of it (no purchase or refund prices used quantity again), and the
    money paid in less refunds and charges is what the lots cost less the use, plus the
    remainder (exactly, but for a refund's rounding up to the line resolution)."""
    rows: list[tuple[Decimal, Decimal | None]] = [(D(0), D("5.00"))]
    remainder = used = charged = paid = D(0)
    for action, amount in actions:
        plan = plan_from_rows(rows)
        left = sum((b.quantity for b in plan), D(0)) - used
        if action == "buy":
            made = convert(
                amount + remainder,
                used + max(left, D(0)),
                STEPS,
                max(-left, D(0)),
                beyond_price(plan),
            )
            rows.extend((b.quantity, b.price) for b in made.blocks)
            remainder, paid = made.remainder, paid + amount
        elif action == "use":
            quantity = amount / 10
            charged += sum((p.quantity * p.price for p in price_range(plan, used, quantity)), D(0))
            used += quantity
        elif left > 0:
            worth = unused_value(plan, used, left) + remainder
            money = min(amount, worth).quantize(D("0.01"), rounding=ROUND_FLOOR)
            kept = min(money, remainder)
            taken = quantity_worth(plan, used, money - kept)
            rows.append((-taken, None))
            remainder, paid = remainder - kept, paid - money
        plan = plan_from_rows(rows)
        assert charged == sum((p.quantity * p.price for p in price_range(plan, D(0), used)), D(0))
        value = sum((b.quantity * b.price for b in plan), D(0))
        assert D(0) <= paid - (value + remainder) < D("0.0001")
