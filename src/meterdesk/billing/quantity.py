"""Quantity credit (购量, F-MODE) in the database: the lots a quantity account bought, what is
left of them, and the purchase, refund and closing rows. The rules are in
:mod:`meterdesk.billing.quantity_model`; the ledger stays in money (the wallet holds what the
lots cost plus the remainder), so every caller here runs inside the money transaction that
credited or refunded that money.

Used since opening is the sum of the account's running totals (``period_totals``), which the
ingest saves in the batch's transaction; a quantity account holds one meter, so that sum has one
order (the meter's readings by measurement time).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, insert, select

from meterdesk.billing import quantity_model as rules
from meterdesk.billing.quantity_model import Block, CreditUnit
from meterdesk.billing.tables import QUANTITY_PLACES, accounts, meter_assignments, quantity_lots
from meterdesk.db.bulk import raw_rows
from meterdesk.metering.tables import meters
from meterdesk.shared.errors import ConflictError, ValidationError
from meterdesk.shared.time import local_date, month_key, zone
from meterdesk.sites.tables import sites
from meterdesk.tariffs.model import Tariff, TariffVersion, TierPeriod, Utility
from meterdesk.tariffs.repository import load_tariff

UNITS = {Utility.ELECTRICITY: "kWh", Utility.WATER: "m³"}


@dataclass(frozen=True)
class QuantityView:
    """What a quantity account holds, for the desk, the CLI, the API and messages."""

    unit: str  # kWh or m³
    bought: Decimal  # in all, refunds taken off
    used: Decimal  # since opening
    left: Decimal  # bought − used; negative: used ahead (overdraft)
    remainder: Decimal  # money not converted yet (less than one step's worth)
    unused_value: Decimal  # what the unused quantity cost (exact)
    price: Decimal  # what use beyond the plan costs (rules.beyond_price)
    blocks: tuple[Block, ...]


def quantity_accounts(conn: Connection, account_ids: Iterable[int]) -> set[int]:
    ids = sorted(set(account_ids))
    if not ids:
        return set()
    return set(
        conn.execute(
            select(accounts.c.id).where(
                accounts.c.id.in_(ids), accounts.c.credit_unit == CreditUnit.QUANTITY.value
            )
        ).scalars()
    )


def is_quantity(conn: Connection, account_id: int) -> bool:
    return bool(quantity_accounts(conn, [account_id]))


def load_plans(conn: Connection, account_ids: Iterable[int]) -> dict[int, tuple[Block, ...]]:
    ids = sorted(set(account_ids))
    rows: dict[int, list[tuple[Decimal, Decimal | None, int | None]]] = {i: [] for i in ids}
    if ids:
        for account_id, quantity, price, bought_by in conn.execute(
            select(
                quantity_lots.c.account_id,
                quantity_lots.c.quantity,
                quantity_lots.c.unit_price,
                quantity_lots.c.bought_by,
            )
            .where(quantity_lots.c.account_id.in_(ids))
            .order_by(quantity_lots.c.id)
        ):
            rows[account_id].append((quantity, price, bought_by))
    return {i: rules.plan_from_rows(found) for i, found in rows.items() if found}


def used(conn: Connection, account_id: int) -> Decimal:
    return _summed(conn, account_id, "")


def _summed(conn: Connection, account_id: int, period_prefix: str) -> Decimal:
    """The account's running totals' quantity summed (months starting with the prefix)."""
    rows = raw_rows(
        conn,
        "SELECT COALESCE(SUM(quantity), 0) FROM period_totals "
        "WHERE account_id = :account AND period_key LIKE :prefix",
        account=account_id,
        prefix=period_prefix + "%",
    )
    return Decimal(int(rows[0][0])).scaleb(-QUANTITY_PLACES)  # stored as millionths


def remainder(conn: Connection, account_id: int) -> Decimal:
    found = conn.execute(
        select(quantity_lots.c.remainder)
        .where(quantity_lots.c.account_id == account_id)
        .order_by(quantity_lots.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return found if found is not None else Decimal(0)


def view(conn: Connection, account_id: int) -> QuantityView:
    plan = load_plans(conn, [account_id])[account_id]
    used_now = used(conn, account_id)
    left = rules.bought(plan) - used_now
    return QuantityView(
        unit=UNITS[_tariff_and_zone(conn, account_id)[0].utility],
        bought=rules.bought(plan),
        used=used_now,
        left=left,
        remainder=remainder(conn, account_id),
        unused_value=rules.unused_value(plan, used_now, left) if left > 0 else Decimal(0),
        price=rules.beyond_price(plan),
        blocks=plan,
    )


def lefts(conn: Connection, account_ids: Iterable[int]) -> dict[int, tuple[Decimal, str]]:
    """Quantity left and unit of each of these quantity accounts, in three queries whatever
    their number (a page of the room grid)."""
    left = _left(conn, account_ids)
    if not left:
        return {}
    units = {
        int(account): UNITS[Utility(utility)]
        for account, utility in raw_rows(
            conn,
            "SELECT ma.account_id, m.utility FROM meter_assignments ma "
            "JOIN meters m ON m.id = ma.meter_id WHERE ma.account_id IN :ids",
            ids=sorted(left),
        )
    }
    return {account: (quantity, units[account]) for account, quantity in left.items()}


def control_balances(conn: Connection, balances: dict[int, int]) -> dict[int, int]:
    """``balances`` (fen) with each quantity account's entry replaced by its quantity left in
    hundredths: the control loop compares a quantity account's thresholds (its plan's amounts
    read as quantities) with that. Three queries however many accounts (a batch's)."""
    found = quantity_accounts(conn, balances)
    if not found:
        return balances
    left = _left(conn, found)
    return {**balances, **{account: rules.hundredths(q) for account, q in left.items()}}


def _left(conn: Connection, account_ids: Iterable[int]) -> dict[int, Decimal]:
    """Bought minus used of each quantity account among these: its lots, and its running
    totals summed per account in one query."""
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    plans = load_plans(conn, ids)
    used_by = {
        int(account): Decimal(int(total)).scaleb(-QUANTITY_PLACES)
        for account, total in raw_rows(
            conn,
            "SELECT account_id, SUM(quantity) FROM period_totals WHERE account_id IN :ids "
            "GROUP BY account_id",
            ids=ids,
        )
    }
    return {
        account: rules.bought(plan) - used_by.get(account, Decimal(0))
        for account, plan in plans.items()
    }


def record_opening(conn: Connection, account_id: int, at: datetime) -> None:
    """The opening's empty block, at the price a first purchase would pay (what use before any
    purchase costs). Refuses a tariff a quantity account cannot buy along. Runs after the
    account's meter was assigned."""
    tariff, tz = _tariff_and_zone(conn, account_id)
    rules.check_tariff(tariff)
    version = _version_at(tariff, local_date(at, tz))
    conn.execute(
        insert(quantity_lots).values(
            account_id=account_id,
            transfer_id=None,
            quantity=Decimal(0),
            unit_price=rules.opening_price(version),
            remainder=Decimal(0),
            created_at=at,
        )
    )


def buy(
    conn: Connection, *, account_id: int, transfer_id: int, money: Decimal, at: datetime
) -> rules.Conversion:
    """Convert a credited purchase (``money``, plus the remainder carried) into blocks at the
    tariff version in force at ``at``; record them. Runs in the recharge's transaction, after
    the money was credited."""
    tariff, tz = _tariff_and_zone(conn, account_id)
    version = _version_at(tariff, local_date(at, tz))
    plan = load_plans(conn, [account_id])[account_id]
    used_now = used(conn, account_id)
    left = rules.bought(plan) - used_now
    position = _period_use(conn, account_id, version, at, tz) + max(left, Decimal(0))
    conversion = rules.convert(
        money + remainder(conn, account_id),
        position,
        rules.conversion_steps(version),
        max(-left, Decimal(0)),
        rules.beyond_price(plan),
    )
    rows = [
        {
            "account_id": account_id,
            "transfer_id": transfer_id,
            "quantity": block.quantity,
            "unit_price": block.price,
            "remainder": conversion.remainder,
            "created_at": at,
            "bought_by": transfer_id,
        }
        for block in conversion.blocks
    ] or [  # too little to buy a step: the money waits as remainder
        {
            "account_id": account_id,
            "transfer_id": transfer_id,
            "quantity": Decimal(0),
            "unit_price": plan[-1].price,
            "remainder": conversion.remainder,
            "created_at": at,
            "bought_by": transfer_id,
        }
    ]
    conn.execute(insert(quantity_lots), rows)
    return conversion


def refund_in(
    conn: Connection, *, account_id: int, transfer_id: int, money: Decimal, at: datetime
) -> Decimal:
    """Money paid back out of a quantity account (a refund): first the remainder, then the
    newest unused quantity at the prices it was bought at. Refuses more than that is worth (the
    transaction's posting is then rolled back). Returns the quantity taken."""
    plan = load_plans(conn, [account_id])[account_id]
    kept = remainder(conn, account_id)
    from_remainder = min(money, kept)
    taken = rules.quantity_worth(plan, used(conn, account_id), money - from_remainder)
    _take_back(conn, account_id, transfer_id, taken, kept - from_remainder, at)
    return taken


def recharge_refusal(
    conn: Connection, *, account_id: int, recharge_id: int, number: str
) -> str | None:
    """Why a recharge of this quantity account cannot be reversed by taking back its own lots,
    in the desk's words (after "recharge N of X cannot be reversed: "), or None when it can.

    A reversal moves the recharge's whole money back out, so it must take back all the quantity
    that money bought, and only that: once part of it is used, that use was priced at its lot's
    price and paid out of its money, and taking the money back would leave it to be paid by the
    other lots (the newest quantity, which the tenant did not buy with this recharge) or priced
    again (never); once part of it was refunded, that money is already out. The clerk refunds
    what is left instead (or reverses that refund first)."""
    rows = _lot_rows(conn, account_id)
    plan = rules.plan_from_rows(_plan_rows(rows))
    bought_then = sum(
        (r.quantity for r in rows if r.transfer_id == recharge_id and r.unit_price is not None),
        Decimal(0),
    )
    unit = UNITS[_tariff_and_zone(conn, account_id)[0].utility]
    spent = rules.used_of(plan, used(conn, account_id), recharge_id)
    if spent > 0:
        return (
            f"account {number} has already used {rules.exact_text(spent)} {unit} of the "
            f"{rules.exact_text(bought_then)} {unit} it bought (a reversal takes back the "
            "recharge's own quantity, whole); refund what is left instead"
        )
    held = sum((b.quantity for b in plan if b.bought_by == recharge_id), Decimal(0))
    if held < bought_then:
        return (
            f"{rules.exact_text(bought_then - held)} {unit} of the "
            f"{rules.exact_text(bought_then)} {unit} it bought were refunded since; reverse that "
            "refund first, or refund what is left instead"
        )
    return None


def reverse_recharge_in(
    conn: Connection,
    *,
    account_id: int,
    recharge_id: int,
    transfer_id: int,
    money: Decimal,
    at: datetime,
) -> tuple[Block, ...]:
    """A recharge reversed (冲正): its own blocks leave the plan, each at its own price —
    wherever they are, also when a later purchase at another price came after them — and the
    other lots stay as they are. Runs in the reversal's transaction, after the money went back
    out and :func:`recharge_refusal` found nothing against it (no block of it is used, none
    refunded: they all lie beyond the quantity used, so nothing priced is priced again). Returns
    the blocks taken out.

    The money and the blocks differ by what the recharge carried: its blocks cost its money plus
    the remainder it converted, less the remainder it left. The carried money takes the
    difference; when what the recharge left carried has gone since (into a later purchase, or a
    refund), that much — less than one step's worth — comes off the newest unused quantity at its
    price, as a refund would take it. Refused (ValidationError, the reason in the desk's words)
    when there is not that much."""
    rows = _lot_rows(conn, account_id)
    plan = rules.plan_from_rows(_plan_rows(rows))
    kept, taken = rules.without_lots(plan, recharge_id)
    keep = rows[-1].remainder + sum((b.quantity * b.price for b in taken), Decimal(0)) - money
    short = rules.ZERO
    if keep < 0:
        try:
            short = rules.quantity_worth(kept, used(conn, account_id), -keep)
        except ValidationError:
            raise ValidationError(
                f"the {rules.exact_text(-keep)} it left carried was used since, and no unused "
                "quantity is left to cover it"
            ) from None
    conn.execute(
        insert(quantity_lots).values(
            account_id=account_id,
            transfer_id=transfer_id,
            quantity=-rules.bought(taken),
            unit_price=None,
            remainder=max(keep, rules.ZERO),
            created_at=at,
            bought_by=recharge_id,
        )
    )
    if short > 0:
        _take_back(conn, account_id, transfer_id, short, rules.ZERO, at)
    return taken


def restore_refund_in(
    conn: Connection, *, account_id: int, refund_id: int, transfer_id: int, at: datetime
) -> tuple[Block, ...]:
    """A refund reversed (冲正): put back exactly what that refund took — the blocks it took off
    the end of the plan, each at its own price and in its order, and the part of the carried
    remainder it paid — not a new purchase at today's price. Runs in the reversal's transaction,
    after the money came back. Returns the blocks put back.

    The blocks go at the end of the plan as it is now: a purchase made since stays before them,
    so no use already priced is priced again. The blocks a refund took were unused and could not
    be used while refunded; but use beyond the plan since (quantity left below 0), charged at the
    price of use beyond the plan, would move into the blocks put back and be priced again at
    theirs: refused, until a purchase has bought that quantity back."""
    rows = _lot_rows(conn, account_id)
    found = [i for i, row in enumerate(rows) if row.transfer_id == refund_id]
    if len(found) != 1 or not found[0] or rows[found[0]].unit_price is not None:
        raise ConflictError(
            f"refund {refund_id} took no quantity that can be put back (it has no take-back row "
            "among the account's lots)"
        )
    at_refund = found[0]
    before = rules.plan_from_rows(_plan_rows(rows[:at_refund]))
    _, taken = rules.take_back(before, -rows[at_refund].quantity)
    from_remainder = rows[at_refund - 1].remainder - rows[at_refund].remainder
    plan = rules.plan_from_rows(_plan_rows(rows))
    left = rules.bought(plan) - used(conn, account_id)
    if left < 0:
        unit = UNITS[_tariff_and_zone(conn, account_id)[0].utility]
        raise ConflictError(
            f"refund {refund_id} cannot be reversed now: the account has used "
            f"{rules.exact_text(-left)} {unit} ahead since, charged at "
            f"{rules.exact_text(rules.beyond_price(plan))}; putting back the quantity the refund "
            "took would price that use again. Recharge first (a purchase buys the quantity used "
            "ahead back), then reverse the refund"
        )
    keep = rows[-1].remainder + from_remainder
    conn.execute(
        insert(quantity_lots),
        [
            {
                "account_id": account_id,
                "transfer_id": transfer_id,
                "quantity": block.quantity,
                "unit_price": block.price,
                "remainder": keep,
                "created_at": at,
                "bought_by": block.bought_by,  # still that recharge's: its reversal takes it
            }
            for block in taken
        ]
        or [  # only carried money was refunded: it is carried again, no quantity moves
            {
                "account_id": account_id,
                "transfer_id": transfer_id,
                "quantity": Decimal(0),
                "unit_price": None,
                "remainder": keep,
                "created_at": at,
            }
        ],
    )
    return taken


def close_in(
    conn: Connection, *, account_id: int, transfer_id: int | None, owes: bool, at: datetime
) -> None:
    """On closing, after the wallet was settled: nothing unused or carried is left. Closed in
    overdraft owing nothing (the carried remainder paid for the use ahead), that use is bought
    back at the price it was charged, as by the arrears payment that clears a debt: no payment
    can come to do it, and a closed account that owes nothing reads 0 left, not used ahead."""
    plan = load_plans(conn, [account_id])[account_id]
    unused = rules.bought(plan) - used(conn, account_id)
    _take_back(conn, account_id, transfer_id, max(unused, Decimal(0)), Decimal(0), at)
    if unused < 0 and not owes:
        conn.execute(
            insert(quantity_lots).values(
                account_id=account_id,
                transfer_id=transfer_id,
                quantity=-unused,
                unit_price=rules.beyond_price(plan),
                remainder=Decimal(0),
                created_at=at,
            )
        )


def arrears_paid_in(
    conn: Connection,
    *,
    account_id: int,
    transfer_id: int,
    money: Decimal,
    cleared: bool,
    at: datetime,
) -> None:
    """Arrears of a closed account paid at the desk (欠费补缴): what a closing in overdraft left
    owed is the quantity used ahead, so the payment buys it back at the price it was charged,
    as the next purchase of an open account does; once nothing is owed (``cleared``) all of it,
    so the quantity left reads 0, not the debt that was paid. A part payment buys back what it
    covers, rounded down to the line resolution (the money the closing kept from the carried
    remainder makes the last payment a little smaller than what it buys back)."""
    plan = load_plans(conn, [account_id])[account_id]
    ahead = used(conn, account_id) - rules.bought(plan)
    if ahead <= 0:
        return
    price = rules.beyond_price(plan)
    back = ahead if cleared or price == 0 else min(ahead, rules.resolution_down(money / price))
    if back <= 0:
        return
    conn.execute(
        insert(quantity_lots).values(
            account_id=account_id,
            transfer_id=transfer_id,
            quantity=back,
            unit_price=price,
            remainder=remainder(conn, account_id),
            created_at=at,
        )
    )


def arrears_payment_reversed_in(
    conn: Connection, *, account_id: int, paid_id: int, transfer_id: int, at: datetime
) -> None:
    """An arrears payment reversed: the quantity it bought back is used ahead again (owed
    again). Taken off the end of the plan, where the payments' buy-backs are, all at one price
    (a closed account buys nothing else)."""
    bought_back = sum(
        conn.execute(
            select(quantity_lots.c.quantity).where(
                quantity_lots.c.account_id == account_id,
                quantity_lots.c.transfer_id == paid_id,
                quantity_lots.c.unit_price.is_not(None),
            )
        ).scalars(),
        Decimal(0),
    )
    if bought_back > 0:
        _take_back(conn, account_id, transfer_id, bought_back, remainder(conn, account_id), at)


def _lot_rows(conn: Connection, account_id: int) -> list[Any]:
    """The account's ``quantity_lots`` rows in id order (transfer, quantity, price, remainder,
    bought by)."""
    return list(
        conn.execute(
            select(
                quantity_lots.c.transfer_id,
                quantity_lots.c.quantity,
                quantity_lots.c.unit_price,
                quantity_lots.c.remainder,
                quantity_lots.c.bought_by,
            )
            .where(quantity_lots.c.account_id == account_id)
            .order_by(quantity_lots.c.id)
        ).all()
    )


def _plan_rows(rows: Iterable[Any]) -> list[tuple[Decimal, Decimal | None, int | None]]:
    return [(row.quantity, row.unit_price, row.bought_by) for row in rows]


def _take_back(
    conn: Connection,
    account_id: int,
    transfer_id: int | None,
    quantity: Decimal,
    keep_remainder: Decimal,
    at: datetime,
) -> None:
    conn.execute(
        insert(quantity_lots).values(
            account_id=account_id,
            transfer_id=transfer_id,
            quantity=-quantity,
            unit_price=None,
            remainder=keep_remainder,
            created_at=at,
        )
    )


def _period_use(
    conn: Connection, account_id: int, version: TariffVersion, at: datetime, tz: ZoneInfo
) -> Decimal:
    period = rules.tier_period(version)
    if period is None:
        return Decimal(0)
    day = local_date(at, tz)
    return _summed(
        conn, account_id, f"{day.year:04d}-" if period is TierPeriod.YEAR else month_key(day)
    )


def _tariff_and_zone(conn: Connection, account_id: int) -> tuple[Tariff, ZoneInfo]:
    row = conn.execute(
        select(meter_assignments.c.tariff_id, sites.c.timezone)
        .join(meters, meters.c.id == meter_assignments.c.meter_id)
        .join(sites, sites.c.id == meters.c.site_id)
        .where(meter_assignments.c.account_id == account_id)
        .order_by(meter_assignments.c.start_at.desc(), meter_assignments.c.id.desc())
        .limit(1)
    ).one()
    return load_tariff(conn, row.tariff_id), zone(row.timezone)


def _version_at(tariff: Tariff, day: date) -> TariffVersion:
    found = [v for v in tariff.versions if v.effective_from <= day]
    if not found:
        raise ValidationError(
            f"tariff: no version in force on {day} (the first is from "
            f"{tariff.versions[0].effective_from})"
        )
    return found[-1]
