"""Read-only queries the live view needs once per simulated step: every account's balance in
one query (the core has ``statements.balance`` for one account at a time, which would mean a
hundred queries a step; only the few quantity-credit accounts are looked at one by one, for
their m³ left), and a check that the ledger still sums to zero."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from sqlalchemy import Connection, func, select

from meterdesk.billing import quantity
from meterdesk.billing.quantity_model import CreditUnit
from meterdesk.billing.tables import accounts, meter_assignments
from meterdesk.db.database import Database
from meterdesk.devices.tables import commands
from meterdesk.ledger.tables import ledger_accounts, transfers
from meterdesk.shared.money import from_fen


@dataclass(frozen=True)
class AccountState:
    number: str
    balance_fen: int  # wallet: negative while an allowed overdraft is in use
    arrears_fen: int  # what the tenant owes beyond the overdraft (>= 0)
    quantity_left: Decimal | None = None  # quantity credit (购量): what is left, in ``unit``
    unit: str = ""  # m³ or kWh for a quantity account

    @property
    def used_up(self) -> bool:
        """A quantity account with nothing left: the control loop cuts it at 0, while its
        wallet still holds a few fen of remainder."""
        return self.quantity_left is not None and self.quantity_left <= 0


def account_states(db: Database, *, organisation_id: int) -> dict[str, AccountState]:
    wallet = ledger_accounts.alias("wallet")
    arrears = ledger_accounts.alias("arrears")
    query = (
        select(
            accounts.c.id,
            accounts.c.number,
            accounts.c.credit_unit,
            wallet.c.balance_fen,
            arrears.c.balance_fen.label("owed"),
        )
        .join(wallet, wallet.c.id == accounts.c.wallet_id)
        .join(arrears, arrears.c.id == accounts.c.arrears_id)
        .where(accounts.c.organisation_id == organisation_id)
    )
    with db.read() as conn:
        states = {}
        for row in conn.execute(query).all():
            state = AccountState(row.number, int(row.balance_fen), -int(row.owed))
            if row.credit_unit == CreditUnit.QUANTITY.value:
                held = quantity.view(conn, int(row.id))
                state = replace(state, quantity_left=held.left, unit=held.unit)
            states[row.number] = state
        return states


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


@dataclass(frozen=True)
class QuantityHeld:
    """One quantity-credit account at the end of the demo: what it bought and whether its
    money still matches its lots."""

    number: str
    unit: str
    bought: Decimal
    left: Decimal
    cuts: int  # confirmed cut commands (valve closed)
    restores: int  # confirmed restore commands (valve opened)
    money: Decimal  # wallet net of arrears
    lots_worth: Decimal  # unused lots at their prices − used ahead at the last price + remainder

    @property
    def matches(self) -> bool:
        return abs(self.money - self.lots_worth) <= Decimal("0.01")


def quantity_accounts(db: Database, *, organisation_id: int) -> list[QuantityHeld]:
    wallet = ledger_accounts.alias("wallet")
    arrears = ledger_accounts.alias("arrears")
    query = (
        select(accounts.c.id, accounts.c.number, wallet.c.balance_fen, arrears.c.balance_fen)
        .join(wallet, wallet.c.id == accounts.c.wallet_id)
        .join(arrears, arrears.c.id == accounts.c.arrears_id)
        .where(
            accounts.c.organisation_id == organisation_id,
            accounts.c.credit_unit == CreditUnit.QUANTITY.value,
        )
        .order_by(accounts.c.number)
    )
    with db.read() as conn:
        held = []
        for account_id, number, wallet_fen, arrears_fen in conn.execute(query).all():
            found = quantity.view(conn, int(account_id))
            cuts, restores = _confirmed_switching(conn, int(account_id))
            held.append(
                QuantityHeld(
                    number,
                    found.unit,
                    found.bought,
                    found.left,
                    cuts,
                    restores,
                    from_fen(int(wallet_fen) + int(arrears_fen)),  # arrears are negative
                    found.unused_value
                    - max(-found.left, Decimal(0)) * found.price
                    + found.remainder,
                )
            )
        return held


def _confirmed_switching(conn: Connection, account_id: int) -> tuple[int, int]:
    counted: dict[str, int] = {
        str(kind): int(count)
        for kind, count in conn.execute(
            select(commands.c.kind, func.count())
            .join(meter_assignments, meter_assignments.c.meter_id == commands.c.meter_id)
            .where(meter_assignments.c.account_id == account_id, commands.c.status == "confirmed")
            .group_by(commands.c.kind)
        )
    }
    cuts = sum(counted.get(kind, 0) for kind in CUT_KINDS)
    restores = sum(counted.get(kind, 0) for kind in RESTORE_KINDS)
    return cuts, restores


CUT_KINDS = ("valve_close", "relay_trip")
RESTORE_KINDS = ("valve_open", "relay_close", "relay_close_allowed")
