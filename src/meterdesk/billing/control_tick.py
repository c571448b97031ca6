"""The control loop's clock: a periodic tick that carries out cuts deferred by friendly hours once
the window ends, repeats alarms at their interval, checks "days of credit left" levels against a
forecast from the account's recent usage, and then puts the decision back on meters that show
otherwise (:mod:`meterdesk.billing.supply_drift`, at most once per meter per
``reassert_interval``). Each tick works in batches of accounts, one transaction per batch, so a
restart in the middle loses nothing and repeats nothing (the control state and its version move
with the decisions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from meterdesk.billing import control, control_send, quantity, supply_drift
from meterdesk.billing.outbox import DatabaseOutbox
from meterdesk.billing.policy import Cause
from meterdesk.db.bulk import raw_rows
from meterdesk.db.database import Database
from meterdesk.db.types import instant_int
from meterdesk.shared.chunks import chunks

FORECAST_WINDOW = timedelta(days=7)
BATCH = 500


@dataclass
class TickReport:
    accounts: int = 0
    decisions: int = 0
    reasserted: int = 0  # commands sent to meters that showed otherwise than the decision


def tick(
    db: Database,
    *,
    outbox: control_send.Outbox | None = None,
    now: datetime | None = None,
    reassert_interval: timedelta = supply_drift.REASSERT_INTERVAL,
) -> TickReport:
    at = now or db.clock()
    sender = outbox or DatabaseOutbox(lambda: at)
    report = TickReport()
    with db.read() as conn:
        candidates = _candidates(conn)
    for chunk in chunks(candidates, BATCH):
        with db.transaction() as conn:
            balances = control.net_balances(conn, chunk, lock=True)
            forecast = days_left(conn, balances, at)
            made = control.evaluate_in(
                conn,
                balances=balances,
                at=at,
                cause=Cause.TICK,
                outbox=sender,
                days_left=forecast,
                everyone=True,
            )
        report.accounts += len(chunk)
        report.decisions += sum(len(d) for d in made.values())
    # After the decisions have committed: a cut or restore just decided is an open command, so
    # its meter is left alone here.
    report.reasserted = supply_drift.reassert(db, outbox=sender, at=at, interval=reassert_interval)
    return report


def _candidates(conn: Connection) -> list[int]:
    """Accounts whose state is active (cut pending, off, alarmed) or whose plan has a days-left level."""
    rows = raw_rows(
        conn,
        "SELECT c.account_id FROM account_controls c JOIN accounts a ON a.id = c.account_id "
        "LEFT JOIN alarm_plans p ON p.id = c.alarm_plan_id "
        "WHERE a.status = 'open' AND (c.active OR p.levels LIKE :days) ORDER BY c.account_id",
        days='%"days_left"%',
    )
    return [int(row[0]) for row in rows]


def days_left(conn: Connection, balances: dict[int, int], at: datetime) -> dict[int, float]:
    """Credit forecast: balance ÷ average daily deductions over the last week (accounts with no
    recent use are left out — they have no forecast). A quantity account's (购量) balance here
    is its quantity; its forecast is its money ÷ its money spent, the same days while its lots
    cost what its use is charged."""
    if not balances:
        return {}
    buying = quantity.quantity_accounts(conn, balances)
    if buying:
        balances = {**balances, **control.net_balances(conn, buying, as_money=True)}
    # By wallet and time (ix_transfers_debit / ix_transfers_credit): a deduction debits the
    # wallet or the arrears, a correction credits the wallet; the account index holds neither.
    since = instant_int(at - FORECAST_WINDOW)
    owners = raw_rows(
        conn,
        "SELECT id, wallet_id, arrears_id FROM accounts WHERE id IN :ids",
        ids=sorted(balances),
    )
    wallets = {wallet: account for account, wallet, _ in owners}
    debited = {i: account for account, wallet, arrears in owners for i in (wallet, arrears)}
    totals: dict[int, int] = {}
    for account_id, fen in raw_rows(
        conn,
        "SELECT debit_account_id, SUM(amount_fen) FROM transfers WHERE debit_account_id IN :ids "
        "AND created_at >= :since AND reason = 'deduction' GROUP BY debit_account_id",
        ids=sorted(debited),
        since=since,
    ):
        owner = debited[account_id]
        totals[owner] = totals.get(owner, 0) + int(fen)
    for account_id, fen in raw_rows(
        conn,
        "SELECT credit_account_id, SUM(amount_fen) FROM transfers WHERE credit_account_id IN :ids "
        "AND created_at >= :since AND reason = 'deduction_correction' GROUP BY credit_account_id",
        ids=sorted(wallets),
        since=since,
    ):
        owner = wallets[account_id]
        totals[owner] = totals.get(owner, 0) - int(fen)
    per_day = {
        account: total / FORECAST_WINDOW.days for account, total in totals.items() if total > 0
    }
    return {account: max(balances[account], 0) / daily for account, daily in per_day.items()}
