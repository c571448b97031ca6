"""Turning running totals into ledger transfers.

For every (meter, account, month) whose exact total changed, post ``round(exact) − posted``:
a positive amount is a deduction from the wallet down to its floor, and whatever the floor does
not allow becomes arrears (energy already used cannot be refused); a negative amount (a late
reading re-priced an interval lower) is given back to the wallet, which then repays arrears
first. Idempotency keys name the meter, account, month and posting number, so the same posting
can never be written twice. All balances move once per batch in ``apply_transfers``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from meterdesk.billing.model import BillingMode, PeriodTotal
from meterdesk.billing.repository import Assignment, TotalKey
from meterdesk.ledger import repository as ledger
from meterdesk.ledger.model import AccountKind, Reason, TransferRequest, arrears_repayment, split_debit
from meterdesk.metering.model import MeterProfile

if TYPE_CHECKING:
    from meterdesk.billing.ingest import IngestReport

SYSTEM_ACTOR = "system:billing"


def revenue_code(utility: str) -> str:
    return f"revenue:{utility}:energy"


def post_due(
    conn: Connection,
    changed: dict[TotalKey, PeriodTotal],
    accounts: dict[int, Assignment],
    profiles: dict[int, MeterProfile],
    at: datetime,
    report: IngestReport,
) -> None:
    due = {
        key: total.due_fen()
        for key, total in changed.items()
        if accounts[key[1]].billing_mode is BillingMode.PLATFORM and total.due_fen() != 0
    }
    if not due:
        return
    revenue = _revenue_accounts(conn, due, accounts, profiles, at)
    touched = {i for key in due for i in (accounts[key[1]].wallet_id, accounts[key[1]].arrears_id)}
    balances = ledger.lock_balances(conn, touched | set(revenue.values()))
    running = {i: b.balance_fen for i, b in balances.items()}
    requests: list[TransferRequest] = []
    for key in sorted(due):
        meter_id, account_id, period = key
        account, amount = accounts[account_id], due[key]
        total = changed[key]
        total.postings += 1
        total.posted_fen += amount
        base = f"deduct:{meter_id}:{account_id}:{period}:{total.postings}"
        revenue_id = revenue[(account.organisation_id, profiles[meter_id].utility.value)]
        common = {"organisation_id": account.organisation_id, "actor": SYSTEM_ACTOR, "created_at": at,
                  "account_id": account_id, "meter_id": meter_id, "period_key": period}
        if amount > 0:
            floor = balances[account.wallet_id].floor_fen or 0
            from_wallet, to_arrears = split_debit(amount_fen=amount, balance_fen=running[account.wallet_id], floor_fen=floor)
            for part, source, suffix in ((from_wallet, account.wallet_id, "w"), (to_arrears, account.arrears_id, "a")):
                if part:
                    requests.append(TransferRequest(idempotency_key=f"{base}:{suffix}", debit_account_id=source,
                                                    credit_account_id=revenue_id, amount_fen=part,
                                                    reason=Reason.DEDUCTION, **common))  # type: ignore[arg-type]
                    running[source] -= part
            report.deducted_fen += amount
        else:
            requests.append(TransferRequest(idempotency_key=f"{base}:c", debit_account_id=revenue_id,
                                            credit_account_id=account.wallet_id, amount_fen=-amount,
                                            reason=Reason.DEDUCTION_CORRECTION, **common))  # type: ignore[arg-type]
            running[account.wallet_id] -= amount
            report.returned_fen -= amount
            repay = arrears_repayment(wallet_balance_fen=running[account.wallet_id], arrears_balance_fen=running[account.arrears_id])
            if repay:
                requests.append(TransferRequest(idempotency_key=f"{base}:r", debit_account_id=account.wallet_id,
                                                credit_account_id=account.arrears_id, amount_fen=repay,
                                                reason=Reason.ARREARS_REPAYMENT, **common))  # type: ignore[arg-type]
                running[account.wallet_id] -= repay
                running[account.arrears_id] += repay
    ledger.apply_transfers(conn, requests, balances)
    report.transfers += len(requests)


def _revenue_accounts(
    conn: Connection,
    due: dict[TotalKey, int],
    accounts: dict[int, Assignment],
    profiles: dict[int, MeterProfile],
    at: datetime,
) -> dict[tuple[int, str], int]:
    needed = {(accounts[a].organisation_id, profiles[m].utility.value) for m, a, _ in due}
    return {
        (org, utility): ledger.system_account(
            conn, organisation_id=org, code=revenue_code(utility), kind=AccountKind.REVENUE, at=at
        )
        for org, utility in needed
    }
