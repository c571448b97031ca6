"""Balances and statements (对账单) of a customer account.

A statement lists every ledger entry that touched the account's wallet or arrears in a period,
oldest first, with the running balance after each: the opening balance plus the entries equals
the closing balance, to the fen. "Balance" is the wallet (credit left, negative when an allowed
overdraft is in use); "arrears" is what the tenant owes beyond the overdraft floor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, select

from meterdesk.billing import quantity
from meterdesk.billing.accounts import account_by_number
from meterdesk.billing.quantity import QuantityView
from meterdesk.billing.quantity_model import CreditUnit
from meterdesk.billing.tables import accounts, meter_assignments
from meterdesk.db.database import Database
from meterdesk.ledger import service as ledger_service
from meterdesk.ledger.tables import ledger_accounts
from meterdesk.metering.tables import meters
from meterdesk.shared.money import from_fen


@dataclass(frozen=True)
class AccountBalance:
    number: str
    status: str
    billing_mode: str
    balance: Decimal
    arrears: Decimal
    overdraft_limit: Decimal
    meters: list[str]
    credit_unit: str = "money"
    quantity: QuantityView | None = None  # a quantity-credit account's (购量) lots and what is left


def balance(db: Database, *, organisation_id: int, number: str) -> AccountBalance:
    with db.read() as conn:
        account = account_by_number(conn, organisation_id=organisation_id, number=number)
        wallet = conn.execute(
            select(ledger_accounts.c.balance_fen, ledger_accounts.c.floor_fen).where(
                ledger_accounts.c.id == account["wallet_id"]
            )
        ).one()
        arrears = ledger_service.balance_fen(conn, int(str(account["arrears_id"])))
        return AccountBalance(
            number=number,
            status=str(account["status"]),
            billing_mode=str(account["billing_mode"]),
            balance=from_fen(wallet.balance_fen),
            arrears=from_fen(-arrears),
            overdraft_limit=from_fen(-(wallet.floor_fen or 0)),
            meters=_meter_numbers(conn, int(str(account["id"]))),
            credit_unit=str(account["credit_unit"]),
            quantity=(
                quantity.view(conn, int(str(account["id"])))
                if account["credit_unit"] == CreditUnit.QUANTITY.value
                else None
            ),
        )


def _meter_numbers(conn: Connection, account_id: int) -> list[str]:
    rows = conn.execute(
        select(meters.c.number)
        .join(meter_assignments, meter_assignments.c.meter_id == meters.c.id)
        .where(meter_assignments.c.account_id == account_id)
        .order_by(meter_assignments.c.start_at)
    )
    return list(dict.fromkeys(str(row[0]) for row in rows))


@dataclass(frozen=True)
class StatementLine:
    at: datetime
    transfer_id: int
    reason: str
    memo: str
    meter_id: int | None
    period_key: str | None
    method: str | None
    balance_change: Decimal
    arrears_change: Decimal
    balance_after: Decimal
    arrears_after: Decimal


@dataclass
class Statement:
    number: str
    start: datetime
    end: datetime
    opening_balance: Decimal
    opening_arrears: Decimal
    closing_balance: Decimal = Decimal("0.00")
    closing_arrears: Decimal = Decimal("0.00")
    lines: list[StatementLine] = field(default_factory=list)
    totals: dict[str, Decimal] = field(default_factory=dict)


def statement(
    db: Database, *, organisation_id: int, number: str, start: datetime, end: datetime
) -> Statement:
    # One snapshot: the opening balances are worked back from the stored balances through the
    # entries since ``start``, which must all be read as of the same commit.
    with db.snapshot() as conn:
        account = account_by_number(conn, organisation_id=organisation_id, number=number)
        wallet_id, arrears_id = int(str(account["wallet_id"])), int(str(account["arrears_id"]))
        wallet = ledger_service.balance_before(conn, wallet_id, start)
        owed = -ledger_service.balance_before(conn, arrears_id, start)
        result = Statement(number, start, end, from_fen(wallet), from_fen(owed))
        for entry in ledger_service.entries_between(conn, [wallet_id, arrears_id], start, end):
            wallet_change = _change(entry, wallet_id)
            arrears_change = -_change(entry, arrears_id)
            wallet += wallet_change
            owed += arrears_change
            reason = str(entry["reason"])
            # Each transfer counts once in its reason's total (a repayment moves money between
            # the wallet and arrears; it is one amount, not two).
            result.totals[reason] = result.totals.get(reason, Decimal("0.00")) + from_fen(
                int(str(entry["amount_fen"]))
            )
            result.lines.append(
                StatementLine(
                    at=_instant(entry["created_at"]),
                    transfer_id=int(str(entry["id"])),
                    reason=reason,
                    memo=str(entry["memo"] or ""),
                    meter_id=_optional_int(entry["meter_id"]),
                    period_key=_optional_str(entry["period_key"]),
                    method=_optional_str(entry["method"]),
                    balance_change=from_fen(wallet_change),
                    arrears_change=from_fen(arrears_change),
                    balance_after=from_fen(wallet),
                    arrears_after=from_fen(owed),
                )
            )
        result.closing_balance, result.closing_arrears = from_fen(wallet), from_fen(owed)
        return result


def _change(entry: dict[str, object], account_id: int) -> int:
    amount = int(str(entry["amount_fen"]))
    if entry["credit_account_id"] == account_id:
        return amount
    if entry["debit_account_id"] == account_id:
        return -amount
    return 0


def _instant(value: object) -> datetime:
    assert isinstance(value, datetime)
    return value


def _optional_int(value: object) -> int | None:
    return None if value is None else int(str(value))


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def account_numbers(db: Database, *, organisation_id: int) -> list[str]:
    with db.read() as conn:
        rows = conn.execute(
            select(accounts.c.number)
            .where(accounts.c.organisation_id == organisation_id)
            .order_by(accounts.c.number)
        )
        return [str(row[0]) for row in rows]
