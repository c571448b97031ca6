"""Quantity credit's rules where the review of sitting 17 found money faults: a free allowance
(a tier block at price 0) must not make use beyond the plan free, and an empty block on top of
the plan (a purchase too small to buy a step) must not hide the unused quantity below it."""

from __future__ import annotations

from datetime import date
from decimal import ROUND_FLOOR, Decimal

from hypothesis import event, given, settings
from hypothesis import strategies as st

from meterdesk.billing.quantity_model import (
    Block,
    Piece,
    beyond_price,
    bought,
    convert,
    opening_price,
    plan_from_rows,
    price_range,
    quantity_worth,
    unused_value,
    used_of,
    without_lots,
)
from meterdesk.shared.errors import ValidationError
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


@settings(max_examples=300)
@given(
    actions=st.lists(
        st.tuples(
            st.sampled_from(["buy", "buy", "use", "use", "refund", "unbuy", "unbuy"]),
            st.decimals(min_value=D("0.01"), max_value=80, places=2),
        ),
        max_size=12,
    )
)
def test_what_was_charged_is_always_the_plan_price_of_the_use(
    actions: list[tuple[str, Decimal]],
) -> None:
    """Purchases along tiers with a free allowance (overdraft bought back first), use priced as
    it comes, refunds off the end, recharges reversed (their own blocks out, wherever they are,
    while none of them is used or refunded): whatever the order, what was charged for the use
    is the current plan's price of it (no purchase, refund or reversal prices used quantity
    again), and the money paid in less refunds, reversals and charges is what the lots cost
    less the use, plus the remainder (exactly, but for a refund's rounding up to the line
    resolution)."""
    rows: list[tuple[Decimal, Decimal | None, int | None]] = [(D(0), D("5.00"), None)]
    remainder = used = charged = paid = D(0)
    purchases: list[tuple[int, Decimal, Decimal]] = []  # recharge, money, quantity bought
    for number, (action, amount) in enumerate(actions):
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
            rows.extend((b.quantity, b.price, number) for b in made.blocks)
            if not made.blocks:
                rows.append((D(0), plan[-1].price, number))
            purchases.append((number, amount, sum((b.quantity for b in made.blocks), D(0))))
            remainder, paid = made.remainder, paid + amount
        elif action == "use":
            quantity = amount / 10
            charged += sum((p.quantity * p.price for p in price_range(plan, used, quantity)), D(0))
            used += quantity
        elif action == "unbuy" and purchases:
            reversed_ = unbuy(rows, purchases, int(amount * 100), used, remainder)
            if reversed_ is not None:
                remainder, paid = reversed_[0], paid - reversed_[1]
        elif left > 0:
            worth = unused_value(plan, used, left) + remainder
            money = min(amount, worth).quantize(D("0.01"), rounding=ROUND_FLOOR)
            kept_money = min(money, remainder)
            taken_back = quantity_worth(plan, used, money - kept_money)
            rows.append((-taken_back, None, None))
            remainder, paid = remainder - kept_money, paid - money
        plan = plan_from_rows(rows)
        assert charged == sum((p.quantity * p.price for p in price_range(plan, D(0), used)), D(0))
        value = sum((b.quantity * b.price for b in plan), D(0))
        assert D(0) <= paid - (value + remainder) < D("0.0001")


def unbuy(
    rows: list[tuple[Decimal, Decimal | None, int | None]],
    purchases: list[tuple[int, Decimal, Decimal]],
    pick: int,
    used: Decimal,
    remainder: Decimal,
) -> tuple[Decimal, Decimal] | None:
    """A recharge reversed as the desk does it (rows appended, the purchase forgotten): its own
    blocks out, refused (None) once part of them is used or refunded, or when what it left
    carried is spent and no lot covers it. Returns (the remainder now, the money paid back)."""
    plan = plan_from_rows(rows)
    recharge, money, quantity = purchases[pick % len(purchases)]
    held = sum((b.quantity for b in plan if b.bought_by == recharge), D(0))
    if used_of(plan, used, recharge) > 0 or held < quantity:
        return None
    kept, taken = without_lots(plan, recharge)
    assert bought(taken) == quantity  # all it bought, nothing else
    keep = remainder + sum((b.quantity * b.price for b in taken), D(0)) - money
    if keep < 0:  # what it left carried went into a later lot: taken off the newest
        try:
            short = quantity_worth(kept, used, -keep)
        except ValidationError:
            return None
        rows.extend([(-quantity, None, recharge), (-short, None, None)])
    else:
        rows.append((-quantity, None, recharge))
        # the other lots are as they were
        assert [b for b in plan_from_rows(rows) if b.quantity] == [
            b for b in plan if b.bought_by != recharge and b.quantity
        ]
    purchases.remove((recharge, money, quantity))
    event("a recharge reversed" + (" (its carried money short)" if keep < 0 else ""))
    return max(keep, D(0)), money
