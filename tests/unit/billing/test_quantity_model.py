"""Quantity credit's pure rules, with answers worked out by hand (decision 0006)."""

from __future__ import annotations

from datetime import date, time
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterdesk.billing.quantity_model import (
    Block,
    Piece,
    beyond_price,
    bought,
    conversion_steps,
    convert,
    hundredths,
    plan_from_rows,
    price_range,
    quantity_worth,
    unused_value,
    used_of,
    without_lots,
)
from meterdesk.shared.errors import ValidationError
from meterdesk.tariffs.model import (
    Band,
    DaySchedule,
    Period,
    Season,
    TariffVersion,
    TierBlock,
    TierMode,
    TierPeriod,
    TierPlan,
)

D = Decimal
FLAT5 = [(None, D("5.00"))]
WATER_TIERS = [(D("10"), D("3.00")), (D("20"), D("4.00")), (None, D("6.00"))]


def test_fifty_at_five_buys_ten() -> None:
    result = convert(D("50.00"), D(0), FLAT5, D(0), D("5"))
    assert result.blocks == (Block(D("10.00"), D("5.00")),)
    assert result.remainder == 0


def test_odd_fen_are_carried_not_lost() -> None:
    # 50.03 at 5.00: 10.00 m³ (10.006 rounds down), 3 fen left over
    result = convert(D("50.03"), D(0), FLAT5, D(0), D("5"))
    assert result.blocks == (Block(D("10.00"), D("5.00")),)
    assert result.remainder == D("0.03")
    # the 3 fen join the next purchase: 49.97 + 0.03 = 50.00 → 10.00 m³, nothing left
    again = convert(D("49.97") + result.remainder, D(0), FLAT5, D(0), D("5"))
    assert again.blocks == (Block(D("10.00"), D("5.00")),) and again.remainder == 0


def test_purchase_crossing_a_tier_block_is_split() -> None:
    # used 4 m³ this period and 3 m³ unused: position 7. 50.00 buys 3 m³ at 3.00 (9.00), then
    # 41.00 at 4.00 = 10.25 m³ — but block 2 holds only 10 m³ (to 20): 10 m³ (40.00), then
    # 1.00 at 6.00 = 0.16 m³ (0.96), 0.04 left over.
    result = convert(D("50.00"), D(7), WATER_TIERS, D(0), D("3"))
    assert result.blocks == (
        Block(D(3), D("3.00")),
        Block(D(10), D("4.00")),
        Block(D("0.16"), D("6.00")),
    )
    assert result.remainder == D("0.04")


def test_overdraft_is_bought_back_at_the_price_it_was_charged() -> None:
    # 1.5 m³ used beyond the plan at 5.00 (7.50 charged); the price is now 6.00.
    result = convert(D("31.50"), D(0), [(None, D("6.00"))], D("1.5"), D("5.00"))
    assert result.blocks == (Block(D("1.5"), D("5.00")), Block(D("4.00"), D("6.00")))
    assert result.remainder == 0


def test_a_purchase_too_small_buys_back_part_of_the_overdraft() -> None:
    result = convert(D("5.00"), D(0), FLAT5, D("3"), D("2.00"))
    assert result.blocks == (Block(D("2.50"), D("2.00")),)
    assert result.remainder == 0


def test_use_is_priced_by_the_blocks_in_order_and_beyond_at_the_last_price() -> None:
    plan = (Block(D(0), D("4")), Block(D(10), D("5")), Block(D(10), D("6")))
    assert price_range(plan, D(8), D(5)) == [Piece(D(2), D("5"), 1), Piece(D(3), D("6"), 2)]
    assert price_range(plan, D(19), D(3)) == [Piece(D(3), D("6"), 2)]  # 2 beyond the plan
    assert price_range(plan, D(25), D(1)) == [Piece(D(1), D("6"), 2)]
    opening_only = (Block(D(0), D("4")),)
    assert price_range(opening_only, D(0), D("0.5")) == [Piece(D("0.5"), D("4"), 0)]


def test_a_price_rise_does_not_shrink_what_was_bought() -> None:
    # 10 m³ bought at 5.00; the price rises to 6.00; using the 10 m³ costs 50.00, not 60.00.
    plan = (Block(D(0), D("5")), Block(D(10), D("5")))
    rise = convert(D("60.00"), D(10), [(None, D("6.00"))], D(0), D("5"))
    plan = plan + rise.blocks
    cost = sum((p.quantity * p.price for p in price_range(plan, D(0), D(10))), D(0))
    assert cost == D("50.00")
    assert bought(plan) == D(20)


def test_refund_takes_the_newest_quantity_back_at_its_own_price() -> None:
    plan = (Block(D(0), D("5")), Block(D(10), D("5")), Block(D(10), D("6")))
    assert unused_value(plan, D(8), D(12)) == D(10) * D(6) + D(2) * D(5)
    with pytest.raises(ValidationError, match="only 12 is unused"):
        unused_value(plan, D(8), D(13))
    after = plan_from_rows(
        [(D(0), D("5"), None), (D(10), D("5"), 1), (D(10), D("6"), 2), (D(-12), None, None)]
    )
    assert after == (Block(D(0), D("5")), Block(D(8), D("5")))
    assert after[1].bought_by == 1  # a block cut by a refund is still its recharge's


def test_a_recharge_reversed_takes_out_its_own_blocks_wherever_they_are() -> None:
    # Recharge 1: 10 at 5.00; recharge 2: 10 at 6.00; 4 used (of recharge 1's lot)
    plan = (Block(D(0), D("5")), Block(D(10), D("5"), 1), Block(D(10), D("6"), 2))
    assert (used_of(plan, D(4), 1), used_of(plan, D(4), 2)) == (D(4), D(0))
    assert used_of(plan, D(13), 2) == D(3)
    assert used_of(plan, D(25), 2) == D(10)  # used ahead: all of it
    kept, taken = without_lots(plan, 1)
    assert taken == (Block(D(10), D("5")),)
    # its place stays, empty and free: recharge 2's block keeps its number (a line's tier_block)
    assert kept == (Block(D(0), D("5")), Block(D(0), D(0)), Block(D(10), D("6")))
    assert beyond_price(kept) == D("6")
    kept, taken = without_lots(plan, 2)
    assert taken == (Block(D(10), D("6")),)
    assert beyond_price(kept) == D("5")  # use beyond the plan: the price before recharge 2
    # the cost of what was used is what it was: 4 at 5.00
    assert price_range(kept, D(0), D(4)) == price_range(plan, D(0), D(4))
    rows = [(D(0), D("5"), None), (D(10), D("5"), 1), (D(10), D("6"), 2), (D(-10), None, 2)]
    assert plan_from_rows(rows) == kept
    # a refund then takes off the end of what is left (the empty block on top goes with it)
    assert plan_from_rows([*rows, (D(-3), None, None)]) == (
        Block(D(0), D("5")),
        Block(D(7), D("5")),
    )


def test_a_refund_in_money_takes_back_the_newest_quantity_worth_it() -> None:
    plan = (Block(D(0), D("5")), Block(D(10), D("5")), Block(D(10), D("6")))
    assert quantity_worth(plan, D(8), D(30)) == D(5)  # 5 m³ of the 6.00 block
    assert quantity_worth(plan, D(8), D(70)) == D(12)  # 10 at 6.00 and 2 at 5.00
    assert quantity_worth(plan, D(8), D("0.01")) == D(
        "0.001667"
    )  # rounded up: never more value kept
    with pytest.raises(ValidationError, match=r"worth 70\.00 at the prices"):
        quantity_worth(plan, D(8), D("70.01"))


def test_time_of_use_tariffs_cannot_convert() -> None:
    day = DaySchedule((Period(time(0, 0), Band.PEAK),))
    version = TariffVersion(
        date(2026, 1, 1),
        {Band.PEAK: D("1")},
        seasons=(Season("all", frozenset(range(1, 13)), day),),
    )
    with pytest.raises(ValidationError, match="not time-of-use"):
        conversion_steps(version)


def test_adder_tiers_add_to_the_flat_price() -> None:
    version = TariffVersion(
        date(2026, 1, 1),
        {Band.FLAT: D("0.5")},
        tiers=TierPlan(
            TierPeriod.MONTH,
            TierMode.ADDER,
            (TierBlock(D(200), D(0)), TierBlock(None, D("0.05"))),
        ),
    )
    assert conversion_steps(version) == [(D(200), D("0.5")), (None, D("0.55"))]


def test_hundredths_round_down() -> None:
    assert hundredths(D("0.004")) == 0
    assert hundredths(D("-0.004")) == -1
    assert hundredths(D("10.00")) == 1000


_money = st.decimals(min_value=0, max_value=5000, places=2)
_price = st.decimals(min_value=D("0.01"), max_value=20, places=2)


@given(
    _money,
    st.decimals(min_value=0, max_value=40, places=2),
    _price,
    st.decimals(min_value=0, max_value=5, places=2),
)
def test_conversion_spends_exactly_what_it_was_given(
    money: Decimal, position: Decimal, price: Decimal, overdraft: Decimal
) -> None:
    result = convert(money, position, WATER_TIERS, overdraft, price)
    spent = sum((b.quantity * b.price for b in result.blocks), D(0))
    assert result.remainder >= 0
    assert spent + result.remainder == money
    # what is left cannot buy another step where it stopped (prices here are at most 6.00 or
    # the overdraft's price)
    assert result.remainder < D("0.01") * max(price, D("6.00"))


@given(
    st.lists(st.decimals(min_value=0, max_value=50, places=2), min_size=1, max_size=5),
    st.lists(st.decimals(min_value=D("0.01"), max_value=9, places=2), min_size=5, max_size=5),
    st.decimals(min_value=0, max_value=200, places=3),
    st.decimals(min_value=0, max_value=50, places=3),
)
def test_a_range_priced_in_two_parts_costs_the_same_as_at_once(
    sizes: list[Decimal], prices: list[Decimal], start: Decimal, quantity: Decimal
) -> None:
    plan = tuple(Block(q, p) for q, p in zip(sizes, prices, strict=False))
    whole = price_range(plan, start, quantity)
    half = quantity / 2
    parts = price_range(plan, start, half) + price_range(plan, start + half, quantity - half)
    assert sum((p.quantity for p in whole), D(0)) == quantity
    cost = sum((p.quantity * p.price for p in whole), D(0))
    assert cost == sum((p.quantity * p.price for p in parts), D(0))
