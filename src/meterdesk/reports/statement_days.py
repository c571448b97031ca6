"""An account statement read day by day (对账单 按日): what the console shows first, because a
meter read every 15 minutes puts ~100 deductions a day on a statement.

Each local day of the period (the site's zone) gets one row: what was deducted (net of
corrections; for meter billing, the meter's usage paid on closing), recharged, refunded and
everything else (an arrears payment after a closing, reversals, emergency credit …), and
the balance and arrears at the end of the day. The rows add up exactly to the statement:
opening + Σ changes = closing (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from zoneinfo import ZoneInfo

from meterdesk.billing.statements import Statement, StatementLine
from meterdesk.shared.time import local_date

ZERO = Decimal("0.00")
DEDUCTIONS = frozenset({"deduction", "deduction_correction"})
RECHARGES = frozenset({"recharge"})
REFUNDS = frozenset({"refund", "settlement"})


@dataclass
class StatementDay:
    day: date
    deducted: Decimal = ZERO  # positive: what the tenant's use cost that day
    recharged: Decimal = ZERO
    refunded: Decimal = ZERO  # positive: paid back to the tenant
    other: Decimal = ZERO  # reversals, emergency credit, …: signed change of the balance
    balance_after: Decimal = ZERO
    arrears_after: Decimal = ZERO
    entries: int = 0
    reasons: set[str] = field(default_factory=set)


def by_day(found: Statement, tz: ZoneInfo) -> list[StatementDay]:
    """One row per local day that has entries, oldest first."""
    days: dict[date, StatementDay] = {}
    for line in found.lines:
        day = local_date(line.at, tz)
        row = days.get(day)
        if row is None:
            row = days[day] = StatementDay(day)
        _add(row, line)
    return list(days.values())


def _add(row: StatementDay, line: StatementLine) -> None:
    # The net change of what the tenant has: the wallet up, arrears down.
    change = line.balance_change - line.arrears_change
    if line.reason in DEDUCTIONS or _usage_settled_on_closing(line):
        row.deducted -= change
    elif line.reason in RECHARGES:
        row.recharged += change
    elif line.reason in REFUNDS:
        row.refunded -= change
    else:
        row.other += change
    row.balance_after, row.arrears_after = line.balance_after, line.arrears_after
    row.entries += 1
    row.reasons.add(line.reason)


def _usage_settled_on_closing(line: StatementLine) -> bool:
    """A closing's settlement without a payment method pays no one back: it is the meter's
    usage of a meter-billing account paid to revenue from the wallet or from arrears
    (billing/cashier_settle.py), or an overdraft moved to arrears (no net change). Only the
    settlement paid out through a method is a refund."""
    return line.reason == "settlement" and line.method is None
