"""Read-only queries the live view needs once per simulated step: every account's balance in
one query (the core has ``statements.balance`` for one account at a time, which would mean a
hundred queries a step), and a check that the ledger still sums to zero."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from meterdesk.billing.tables import accounts
from meterdesk.db.database import Database
from meterdesk.ledger.tables import ledger_accounts, transfers


@dataclass(frozen=True)
class AccountState:
    number: str
    balance_fen: int  # wallet: negative while an allowed overdraft is in use
    arrears_fen: int  # what the tenant owes beyond the overdraft (>= 0)


def account_states(db: Database, *, organisation_id: int) -> dict[str, AccountState]:
    wallet = ledger_accounts.alias("wallet")
    arrears = ledger_accounts.alias("arrears")
    query = (
        select(accounts.c.number, wallet.c.balance_fen, arrears.c.balance_fen.label("owed"))
        .join(wallet, wallet.c.id == accounts.c.wallet_id)
        .join(arrears, arrears.c.id == accounts.c.arrears_id)
        .where(accounts.c.organisation_id == organisation_id)
    )
    with db.read() as conn:
        return {
            row.number: AccountState(row.number, int(row.balance_fen), -int(row.owed))
            for row in conn.execute(query)
        }


@dataclass(frozen=True)
class LedgerCheck:
    transfers: int
    sum_of_balances_fen: int  # 0: double entry holds
    mismatched_accounts: int  # accounts whose balance differs from the sum of their transfers

    @property
    def ok(self) -> bool:
        return self.sum_of_balances_fen == 0 and self.mismatched_accounts == 0


def check_ledger(db: Database, *, organisation_id: int) -> LedgerCheck:
    with db.read() as conn:
        balances = {
            int(row.id): int(row.balance_fen)
            for row in conn.execute(
                select(ledger_accounts.c.id, ledger_accounts.c.balance_fen).where(
                    ledger_accounts.c.organisation_id == organisation_id
                )
            )
        }
        moved = dict.fromkeys(balances, 0)
        count = 0
        for row in conn.execute(
            select(
                transfers.c.debit_account_id, transfers.c.credit_account_id, transfers.c.amount_fen
            ).where(transfers.c.organisation_id == organisation_id)
        ):
            count += 1
            moved[int(row.credit_account_id)] += int(row.amount_fen)
            moved[int(row.debit_account_id)] -= int(row.amount_fen)
    mismatched = sum(1 for key, value in balances.items() if moved[key] != value)
    return LedgerCheck(count, sum(balances.values()), mismatched)
