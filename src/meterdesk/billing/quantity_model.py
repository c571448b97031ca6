"""Pure rules of quantity credit (购量, F-MODE): what a purchase buys and what using it costs.

docs/decisions/0006-quantity-credit.md has the reasons; in short:

- The ledger stays in money. A quantity account's purchases are *lots*: blocks of quantity at
  the unit price in force when bought. Taken in purchase order they form a tier plan that never
  resets; the cost of having used ``C`` since opening is the piecewise-linear ``F(C)`` over the
  blocks. ``F`` depends on the cumulative quantity only, so late, re-sent and reordered readings
  price the same.
- Use beyond the last block (overdraft) is priced at the last block's price (the newest priced
  one when the last is a free allowance): the plan always has one block (the opening adds an
  empty one at the opening's price). The next purchase first buys that quantity back at that
  same price, so nothing already posted is priced again.
- A purchase converts at the tariff version in force at the purchase instant: a flat price, or
  tier blocks (阶梯) starting where the period's use plus the unused quantity has reached, split
  over the blocks it crosses. Quantities are rounded down to :data:`STEP`; the money left over
  (less than one step's worth) is the *remainder*, carried into the next purchase.
- A refund takes the newest unused quantity back off the end of the plan, at its own prices;
  its reversal puts those blocks back at the end (:func:`take_back` says which they were).
- Each block knows the recharge that bought it (``bought_by``). A recharge reversed takes back
  exactly its own blocks, wherever they are in the plan (:func:`without_lots`), only while none
  of them is used (:func:`used_of`): they then all lie beyond the used quantity, so the cost of
  the quantity used stays what it was. They stay in the plan as empty free blocks, so no block
  behind them changes its number (a priced line's ``tier_block``).

Invariants: blocks have quantity >= 0 and a price >= 0; a plan is never empty; ``price_range``
splits a quantity exactly (its pieces add up to it); ``convert`` never spends more than it is
given (``remainder >= 0``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum

from meterdesk.shared.errors import ValidationError
from meterdesk.tariffs.model import Band, Tariff, TariffVersion, TierMode, TierPeriod

STEP = Decimal("0.01")  # what a purchase buys is whole hundredths of a kWh or m³
RESOLUTION = Decimal("0.000001")  # a priced line's quantity (billing.tables.QUANTITY_PLACES)
ZERO = Decimal(0)


class CreditUnit(StrEnum):
    MONEY = "money"  # the default: the balance is money, consumption priced when used
    QUANTITY = "quantity"  # 购量: the balance is kWh or m³, priced when bought


@dataclass(frozen=True)
class Block:
    quantity: Decimal
    price: Decimal
    # The recharge (its transfer id) that bought the block, whichever refunds and reversals moved
    # it since; None: the opening's, or quantity bought back by an arrears payment or a closing.
    # Not part of a block's value (two blocks of one quantity and price are equal).
    bought_by: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Piece:
    """A part of a used quantity priced by one block (``block`` is its index in the plan)."""

    quantity: Decimal
    price: Decimal
    block: int


@dataclass(frozen=True)
class Conversion:
    blocks: tuple[Block, ...]  # in order: the buy-back of overdraft first, then tier blocks
    remainder: Decimal  # money given but not converted (>= 0)


def parse_credit_unit(value: object) -> CreditUnit:
    try:
        return CreditUnit(str(value))
    except ValueError:
        raise ValidationError(
            f"credit_unit: {value!r} is not 'money' or 'quantity' (购量: kWh or m³ bought ahead)"
        ) from None


def plan_from_rows(
    rows: Iterable[tuple[Decimal, Decimal | None, int | None]],
) -> tuple[Block, ...]:
    """The plan from ``quantity_lots`` rows (quantity, unit price, bought by) in id order: a row
    with a price adds a block, one without takes ``-quantity`` back off the end — or, when it
    names a recharge, that recharge's blocks (:func:`without_lots`: the recharge reversed)."""
    blocks: tuple[Block, ...] = ()
    for quantity, price, bought_by in rows:
        if price is not None:
            blocks = (*blocks, Block(quantity, price, bought_by))
        elif bought_by is not None:
            blocks, _ = without_lots(blocks, bought_by)
        else:
            blocks, _ = take_back(blocks, -quantity)
    if not blocks:
        raise ValueError("a quantity account's plan has at least its opening block")
    return blocks


def take_back(
    plan: Sequence[Block], quantity: Decimal
) -> tuple[tuple[Block, ...], tuple[Block, ...]]:
    """``quantity`` taken back off the end of the plan (a refund, a close): the plan kept, and
    the blocks taken in plan order (each at its own price), which a reversal of that refund
    puts back. The first block (the opening's) is never removed, only shortened."""
    kept, taken = list(plan), []
    left = quantity
    while left > 0:
        if len(kept) == 1 and kept[0].quantity < left:
            raise ValueError(f"{quantity} taken back off a plan that holds less")
        last = kept[-1]
        if last.quantity > left or len(kept) == 1:
            kept[-1] = Block(last.quantity - left, last.price, last.bought_by)
            taken.append(Block(left, last.price, last.bought_by))
            left = ZERO
        else:
            left -= last.quantity
            taken.append(kept.pop())
    return tuple(kept), tuple(reversed(taken))


def without_lots(
    plan: Sequence[Block], recharge: int
) -> tuple[tuple[Block, ...], tuple[Block, ...]]:
    """The blocks ``recharge`` bought taken out of the plan (the recharge reversed): the plan
    kept, each of them left as an empty free block in its place (no block behind it changes its
    number, and a free block is never the price of use beyond the plan), and the blocks taken,
    in plan order. Only right while none of them is used (:func:`used_of` is 0): then they all
    lie beyond the quantity used, whose cost stays what it was."""
    kept = tuple(Block(ZERO, ZERO) if block.bought_by == recharge else block for block in plan)
    return kept, tuple(block for block in plan if block.bought_by == recharge)


def used_of(plan: Sequence[Block], used: Decimal, recharge: int) -> Decimal:
    """How much of the quantity ``recharge`` bought lies within the quantity ``used`` (priced
    along its blocks): the part of that recharge already used."""
    found, bound = ZERO, ZERO
    for block in plan:
        start, bound = bound, bound + block.quantity
        if block.bought_by == recharge and used > start:
            found += min(bound, used) - start
    return found


def bought(plan: Sequence[Block]) -> Decimal:
    return sum((block.quantity for block in plan), ZERO)


def price_range(plan: Sequence[Block], used_before: Decimal, quantity: Decimal) -> list[Piece]:
    """Split ``quantity`` used after ``used_before`` over the plan's blocks (in order; what is
    beyond the last block at :func:`beyond_price`), one piece per run of blocks at one price:
    so a purchase changes none of the pieces of use it came after, even priced again."""
    pieces: list[Piece] = []
    start, left = used_before, quantity
    bound = ZERO
    for index, block in enumerate(plan):
        bound += block.quantity
        if start >= bound:
            continue
        taken = min(bound - start, left)
        if taken > 0:
            _add_piece(pieces, taken, block.price, index)
            start += taken
            left -= taken
        if left <= 0:
            return pieces
    if left > 0:
        _add_piece(pieces, left, beyond_price(plan), len(plan) - 1)
    return pieces


def _add_piece(pieces: list[Piece], quantity: Decimal, price: Decimal, block: int) -> None:
    if pieces and pieces[-1].price == price:
        # One piece per price: a block bought back at the price it was charged (or a lot at an
        # unchanged price) does not split a line that was priced as one.
        pieces[-1] = Piece(pieces[-1].quantity + quantity, price, pieces[-1].block)
    else:
        pieces.append(Piece(quantity, price, block))


def beyond_price(plan: Sequence[Block]) -> Decimal:
    """What use beyond the plan (overdraft) costs, and what buys it back: the last block's price
    — unless that block is free (a tier's free allowance, 价格 0), which is bounded: then the
    price of the newest block that has one. The opening block carries a price (the first step
    that has one), so there is one unless the account was opened before that rule."""
    for block in reversed(plan):
        if block.price > 0:
            return block.price
    return plan[-1].price


def conversion_steps(version: TariffVersion) -> list[tuple[Decimal | None, Decimal]]:
    """The (block bound, unit price) steps a purchase converts along; flat: one open step."""
    if version.seasons:
        raise ValidationError(
            "tariff: a quantity account needs a flat or tiered tariff, not time-of-use "
            "(a kWh bought ahead has no time-of-use band to price it)"
        )
    flat = version.prices.get(Band.FLAT)
    if version.tiers is None:
        if flat is None:
            raise ValidationError("tariff: the version has no flat price")
        return [(None, flat)]
    adder = version.tiers.mode is TierMode.ADDER
    base = flat if adder and flat is not None else ZERO
    return [
        (block.up_to, base + block.price if adder else block.price)
        for block in version.tiers.blocks
    ]


def check_opening(platform_billing: bool, meter_count: int, overdraft: Decimal) -> None:
    """What a quantity-credit account needs besides its tariff (decision 0006, "As built"):
    platform billing (a meter billing its own money keeps no quantity), one meter (the use of
    several has no one order to price lots along) and no overdraft limit (the limit is money,
    while its control reads amounts as quantities: 50.00 would mean 50 m³ used ahead)."""
    if not platform_billing:
        raise ValidationError(
            "credit_unit: quantity credit (购量) needs platform billing (后台计费); a meter billing "
            "its own money keeps no quantity"
        )
    if meter_count != 1:
        raise ValidationError(
            f"credit_unit: a quantity-credit account (购量) holds one meter, not {meter_count}"
        )
    if overdraft != 0:
        raise ValidationError(
            "overdraft_limit: a quantity-credit account (购量) has none; it is cut when what it "
            "bought is used up"
        )


def tier_period(version: TariffVersion) -> TierPeriod | None:
    return version.tiers.period if version.tiers is not None else None


def check_tariff(tariff: Tariff) -> None:
    """Refuse a tariff a quantity account cannot buy along (any version: a later one would be
    refused at the purchase)."""
    for version in tariff.versions:
        steps = conversion_steps(version)
        if steps[-1][1] <= 0:
            raise ValidationError(
                f"tariff: the version from {version.effective_from} sells its last block at "
                "price 0, so a purchase would buy without end"
            )


def opening_price(version: TariffVersion) -> Decimal:
    """The price of the opening's empty block (what use before any purchase costs): the first
    step's price, or the first one above 0 when the tariff starts with a free allowance (a
    bounded block: unbounded use before any purchase must not be free)."""
    steps = conversion_steps(version)
    return next((price for _, price in steps if price > 0), steps[-1][1])


def convert(
    money: Decimal,
    position: Decimal,
    steps: Sequence[tuple[Decimal | None, Decimal]],
    overdraft: Decimal,
    overdraft_price: Decimal,
) -> Conversion:
    """What ``money`` buys: first the ``overdraft`` already used beyond the plan, at the price
    it was charged; then along ``steps`` from ``position`` (the tier period's use plus the
    unused quantity), each step's quantity rounded down to :data:`STEP` unless the step's bound
    limits it."""
    blocks: list[Block] = []
    left = money
    if overdraft > 0:
        back = overdraft if overdraft * overdraft_price <= left else _down(left, overdraft_price)
        if back > 0:
            blocks.append(Block(back, overdraft_price))
            left -= back * overdraft_price
        if back < overdraft:
            return Conversion(tuple(blocks), left)
    for up_to, price in steps:
        if up_to is not None and up_to <= position:
            continue
        room = None if up_to is None else up_to - position
        if price == 0:
            if room is None:
                raise ValidationError("tariff: a block sold at price 0 without a bound")
            taken = room
        else:
            affordable = _down(left, price)
            taken = affordable if room is None else min(room, affordable)
        if taken > 0:
            blocks.append(Block(taken, price))
            left -= taken * price
            position += taken
        if room is None or taken < room:
            break
    return Conversion(tuple(blocks), left)


def unused_value(plan: Sequence[Block], used: Decimal, quantity: Decimal) -> Decimal:
    """What the newest ``quantity`` of the unused part cost (exact), at each block's price."""
    if quantity > bought(plan) - used:
        raise ValidationError(f"quantity: only {max(bought(plan) - used, ZERO)} is unused")
    value, left = ZERO, quantity
    for block in reversed(plan):
        if left <= 0:
            break
        taken = min(block.quantity, left)
        value += taken * block.price
        left -= taken
    return value


def quantity_worth(plan: Sequence[Block], used: Decimal, money: Decimal) -> Decimal:
    """The newest unused quantity worth ``money`` at its blocks' prices, to take back off the
    end of the plan (a refund): rounded up to the line resolution, so what stays never holds
    more value than the money that stays. A free block (price 0) on top goes with it."""
    taken, left = ZERO, money
    bound = bought(plan)
    for block in reversed(plan):
        if left <= 0:
            break
        if block.quantity == 0:  # a purchase too small to buy a step: nothing to take here
            continue
        unused = max(ZERO, min(block.quantity, bound - used))
        bound -= block.quantity
        if unused <= 0:
            break
        value = unused * block.price
        if value >= left and block.price > 0:
            taken += (left / block.price).quantize(RESOLUTION, rounding=ROUND_CEILING)
            left = ZERO
        else:
            taken += unused
            left -= value
    if left > 0:
        raise ValidationError(
            f"amount: the unused quantity is worth {money - left:f} at the prices it was "
            f"bought at, {money:f} was asked"
        )
    return taken


def exact_text(value: Decimal) -> str:
    """A quantity or price with every place it has, at least two, no exponent (``10.00``,
    ``9.995``)."""
    if value == value.quantize(STEP):
        return f"{value.quantize(STEP):f}"
    return f"{value.normalize():f}"


def hundredths(quantity: Decimal) -> int:
    """Quantity left as the control loop's integer (hundredths, rounded down: 0.004 m³ left is
    nothing left)."""
    return int((quantity * 100).to_integral_value(rounding=ROUND_FLOOR))


def hundredths_text(value: int) -> str:
    """Hundredths of a kWh or m³ as a tenant's message shows them (``3.00``): the shape of fen."""
    return f"{Decimal(value).scaleb(-2):f}"


def resolution_down(quantity: Decimal) -> Decimal:
    """A quantity rounded down to the line resolution."""
    return quantity.quantize(RESOLUTION, rounding=ROUND_FLOOR)


def _down(money: Decimal, price: Decimal) -> Decimal:
    return (money / price).quantize(STEP, rounding=ROUND_FLOOR) if money > 0 else ZERO
