"""What a deduction summary (扣费通知) says, read for a batch of accounts in a few queries.

The use and cost of a period are the account's priced lines whose interval **ends** in it,
read from both stores through :func:`meterdesk.billing.lines.select_lines` (a line on a reading
row is as much a line as a row of ``charge_lines``), active lines only (a line priced again
after a late reading is replaced, not added). The cost is the exact sum rounded half up to fen
once per utility, so it can differ by a fen from the wallet's postings, which round the running
total of a billing month instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import Connection, and_, or_, select

from meterdesk.billing import quantity
from meterdesk.billing.lines import select_lines
from meterdesk.billing.quantity import UNITS
from meterdesk.billing.quantity_model import CreditUnit, hundredths, hundredths_text
from meterdesk.billing.tables import accounts, meter_assignments
from meterdesk.db.types import instant_int
from meterdesk.ledger.tables import ledger_accounts
from meterdesk.metering.tables import meters
from meterdesk.notifications.summary_periods import Period
from meterdesk.shared.money import from_fen, round_fen
from meterdesk.tariffs.model import Utility

QUANTITY_STEP = Decimal("0.01")
UTILITIES = (Utility.ELECTRICITY, Utility.WATER)  # the order a message names them in


@dataclass
class AccountUse:
    """One account's period: per utility the quantity used and the exact cost."""

    account_id: int
    used: dict[Utility, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    cost: dict[Utility, Decimal] = field(default_factory=lambda: defaultdict(Decimal))

    def params(self) -> dict[str, str]:
        """``electricity_quantity`` / ``electricity_amount`` (and ``water_…``) for each utility
        used, as display strings: SMS providers take flat template parameters."""
        found: dict[str, str] = {}
        for utility in UTILITIES:
            if utility in self.used:
                found[f"{utility.value}_quantity"] = (
                    f"{self.used[utility].quantize(QUANTITY_STEP):f}"
                )
                found[f"{utility.value}_amount"] = f"{round_fen(self.cost[utility]):f}"
                found[f"{utility.value}_unit"] = UNITS[utility]
        return found


def uses(conn: Connection, account_ids: list[int], period: Period) -> dict[int, AccountUse]:
    """The accounts among ``account_ids`` that used or were charged anything in ``period``.
    Two queries: the meters assigned to them during the period, then their lines."""
    if not account_ids:
        return {}
    start, end = instant_int(period.start), instant_int(period.end)
    assigned = meter_assignments
    utility_of = {
        int(meter): Utility(utility)
        for meter, utility in conn.execute(
            select(assigned.c.meter_id, meters.c.utility)
            .join(meters, meters.c.id == assigned.c.meter_id)
            .where(
                assigned.c.account_id.in_(account_ids),
                assigned.c.start_at < end,
                or_(assigned.c.end_at.is_(None), assigned.c.end_at > start),
            )
            .distinct()
        ).all()
    }
    if not utility_of:
        return {}
    rows = conn.execute(
        select_lines(
            ("account_id", "meter_id", "quantity", "cost"),
            lambda line: (
                line["meter_id"].in_(sorted(utility_of)),  # each store's (meter, end) index
                line["account_id"].in_(account_ids),  # a meter moved on bills someone else
                line["active"].is_(True),
                and_(line["interval_end"] >= start, line["interval_end"] < end),
            ),
        )
    )
    found: dict[int, AccountUse] = {}
    for account_id, meter_id, used, cost in rows:
        use = found.setdefault(int(account_id), AccountUse(int(account_id)))
        utility = utility_of[int(meter_id)]
        use.used[utility] += used
        use.cost[utility] += cost
    return {
        account: use
        for account, use in found.items()
        if any(use.used.values()) or any(use.cost.values())
    }


def standings(conn: Connection, account_ids: Iterable[int]) -> dict[int, dict[str, str]]:
    """What each account holds now: the wallet's ``balance``, or for a quantity account (购量)
    ``quantity_left`` and ``unit``, as its other messages say. Two to five queries."""
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    rows = conn.execute(
        select(accounts.c.id, accounts.c.credit_unit, ledger_accounts.c.balance_fen)
        .join(ledger_accounts, ledger_accounts.c.id == accounts.c.wallet_id)
        .where(accounts.c.id.in_(ids))
    ).all()
    by_quantity = [int(r.id) for r in rows if r.credit_unit == CreditUnit.QUANTITY.value]
    lefts = quantity.lefts(conn, by_quantity) if by_quantity else {}
    found: dict[int, dict[str, str]] = {}
    for row in rows:
        account = int(row.id)
        if account in lefts:
            left, unit = lefts[account]
            # hundredths of the unit, rounded down, as the alarms and the cashier's receipts count
            found[account] = {"quantity_left": hundredths_text(hundredths(left)), "unit": unit}
        else:
            found[account] = {"balance": f"{from_fen(int(row.balance_fen)):f}"}
    return found
