"""Turning running totals into ledger transfers.

For every (meter, account, month) whose exact total changed, post ``round(exact) − posted``:
a positive amount is a deduction from the wallet down to its floor, and whatever the floor does
not allow becomes arrears (energy already used cannot be refused); a negative amount (a late
reading re-priced an interval lower) is given back to the wallet, which then repays arrears
first. Idempotency keys name the meter, account, month and posting number, so the same posting
can never be written twice. All balances move once per batch in ``apply_transfers``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import Connection

from meterdesk.billing.model import BillingMode, PeriodTotal
from meterdesk.billing.repository import Assignment, TotalKey
from meterdesk.db.types import instant_int
from meterdesk.ledger import repository as ledger
from meterdesk.ledger.model import AccountKind, Reason, arrears_repayment, split_debit
from meterdesk.ledger.repository import Balance, TransferRow
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
    lock: Callable[[Connection, Iterable[int]], dict[int, Balance]] = ledger.lock_balances,
) -> dict[int, int]:
    """Post what is due; return the net balance (wallet minus arrears, fen) of every account
    that moved, for the control loop. ``lock`` reads (and on PostgreSQL locks) the balances:
    :func:`ledger.repository.lock_balances`, or the ingestor's kept state."""
    due = {}
    for key, total in changed.items():
        amount = total.due_fen()
        if amount and accounts[key[1]].billing_mode is BillingMode.PLATFORM:
            due[key] = amount
    if not due:
        return {}
    revenue = _revenue_accounts(conn, due, accounts, profiles, at)
    touched = {i for key in due for i in (accounts[key[1]].wallet_id, accounts[key[1]].arrears_id)}
    balances = lock(conn, touched | set(revenue.values()))
    running = {i: b.balance_fen for i, b in balances.items()}
    requests: list[TransferRow] = []
    created_at = instant_int(at)
    for key in sorted(due):
        meter_id, account_id, period = key
        account, amount, total = accounts[account_id], due[key], changed[key]
        total.postings += 1
        total.posted_fen += amount
        posting = _Posting(
            key=f"deduct:{meter_id}:{account_id}:{period}:{total.postings}",
            account=account,
            revenue_id=revenue[(account.organisation_id, str(profiles[meter_id].utility))],
            meter_id=meter_id,
            period=period,
            at=created_at,
        )
        if amount > 0:
            floor = balances[account.wallet_id].floor_fen or 0
            requests.extend(posting.deduction(amount, running, floor))
            report.deducted_fen += amount
        else:
            requests.extend(
                posting.correction(-amount, running, balances[account.wallet_id].floor_fen or 0)
            )
            report.returned_fen -= amount
    ledger.apply_system_rows(conn, requests, balances)
    report.transfers += len(requests)
    moved = {accounts[key[1]] for key in due}
    return {a.account_id: running[a.wallet_id] + running[a.arrears_id] for a in moved}


class _Posting(NamedTuple):
    """One posting of a (meter, account, month) running total; ``running`` holds balances as
    they will be after the transfers built so far in this batch. (A NamedTuple: one is built per
    posting, and a tuple is cheaper to build than a frozen dataclass.)"""

    key: str
    account: Assignment
    revenue_id: int
    meter_id: int
    period: str
    at: int  # stored form (instant_int)

    def _transfer(
        self, suffix: str, debit: int, credit: int, amount: int, reason: Reason
    ) -> TransferRow:
        return ledger.system_transfer_row(
            organisation_id=self.account.organisation_id,
            idempotency_key=f"{self.key}:{suffix}",
            debit_account_id=debit,
            credit_account_id=credit,
            amount_fen=amount,
            reason=reason,
            actor=SYSTEM_ACTOR,
            created_at=self.at,
            account_id=self.account.account_id,
            meter_id=self.meter_id,
            period_key=self.period,
        )

    def deduction(self, amount: int, running: dict[int, int], floor: int) -> list[TransferRow]:
        """From the wallet down to its floor; the rest (energy already used) becomes arrears."""
        wallet, arrears = self.account.wallet_id, self.account.arrears_id
        from_wallet, to_arrears = split_debit(
            amount_fen=amount, balance_fen=running[wallet], floor_fen=floor
        )
        made = []
        if from_wallet:
            made.append(self._transfer("w", wallet, self.revenue_id, from_wallet, Reason.DEDUCTION))
            running[wallet] -= from_wallet
        if to_arrears:
            made.append(self._transfer("a", arrears, self.revenue_id, to_arrears, Reason.DEDUCTION))
            running[arrears] -= to_arrears
        return made

    def correction(self, amount: int, running: dict[int, int], floor: int) -> list[TransferRow]:
        """Give back what a re-priced interval no longer costs; it repays arrears first."""
        wallet, arrears = self.account.wallet_id, self.account.arrears_id
        made = [self._transfer("c", self.revenue_id, wallet, amount, Reason.DEDUCTION_CORRECTION)]
        running[wallet] += amount
        repay = arrears_repayment(
            wallet_balance_fen=running[wallet],
            arrears_balance_fen=running[arrears],
            floor_fen=floor,
        )
        if repay:
            made.append(self._transfer("r", wallet, arrears, repay, Reason.ARREARS_REPAYMENT))
            running[wallet] -= repay
            running[arrears] += repay
        return made


def _revenue_accounts(
    conn: Connection,
    due: dict[TotalKey, int],
    accounts: dict[int, Assignment],
    profiles: dict[int, MeterProfile],
    at: datetime,
) -> dict[tuple[int, str], int]:
    needed = {(accounts[a].organisation_id, str(profiles[m].utility)) for m, a, _ in due}
    found = ledger.system_accounts(
        conn,
        {(org, revenue_code(utility)) for org, utility in needed},
        kind=AccountKind.REVENUE,
        at=at,
    )
    return {(org, utility): found[(org, revenue_code(utility))] for org, utility in needed}
