"""The prepaid control loop (F-ALARM, F-TRIP, F-RESTORE): decisions taken in the caller's
transaction — the ingest batch that deducted, the recharge that credited, the scheduler tick —
and sent out through the outbox: device commands and tenant messages are rows written in the
same transaction, delivered after commit. A decision is made once: the account's control state
and its ``version`` move in the same transaction, and every outbox key carries the version.

Accounts without a stored policy follow the default prepaid policy: no alarms, cut at zero,
restore directly once the balance is above zero. Meter-billing accounts (表端计费) get alarms
and messages only; their meters cut and restore themselves.

This module decides (:func:`~meterdesk.billing.policy.decide` for each account, with its friendly
hours); the stored state is read and written by :mod:`meterdesk.billing.control_state`, and the
decisions become commands and messages in :mod:`meterdesk.billing.control_send`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select

from meterdesk.billing import control_config, quantity
from meterdesk.billing.control_send import Outbox, send_decisions
from meterdesk.billing.control_state import ControlledAccount, load_accounts, save_states
from meterdesk.billing.policy import Cause, ControlState, Decision, Situation, decide
from meterdesk.billing.tables import accounts, friendly_profiles, site_holidays
from meterdesk.db.bulk import raw_rows
from meterdesk.ledger import repository as ledger
from meterdesk.ledger.tables import ledger_accounts
from meterdesk.shared.time import zone


def evaluate_in(
    conn: Connection,
    *,
    balances: dict[int, int],
    at: datetime,
    cause: Cause,
    outbox: Outbox,
    days_left: dict[int, float] | None = None,
    everyone: bool = False,
) -> dict[int, list[Decision]]:
    """Decide for each account (net balance in fen: wallet minus arrears) and send the decisions
    out. Returns the decisions per account that had any."""
    made: dict[int, list[Decision]] = {}
    changed: list[tuple[ControlledAccount, ControlState]] = []
    deciding: list[tuple[ControlledAccount, list[Decision], Situation]] = []
    for account in load_accounts(conn, balances, everyone=everyone or cause is Cause.POLICY_CHANGE):
        friendly = (
            _friendly(conn, account, at)
            if balances[account.account_id] <= account.policy.cut_threshold_fen
            else False
        )
        situation = Situation(
            balances[account.account_id],
            at,
            cause,
            friendly,
            (days_left or {}).get(account.account_id),
        )
        new_state, decisions = decide(account.policy, account.state, situation)
        if new_state == account.state and cause is not Cause.POLICY_CHANGE:
            continue
        changed.append((account, new_state))
        if decisions:
            made[account.account_id] = decisions
            deciding.append((account, decisions, situation))
    save_states(conn, changed, at)
    send_decisions(conn, deciding, outbox)
    return made


def _friendly(conn: Connection, account: ControlledAccount, at: datetime) -> bool:
    if account.friendly_profile_id is None:
        return False
    profile = (
        conn.execute(
            select(friendly_profiles).where(friendly_profiles.c.id == account.friendly_profile_id)
        )
        .mappings()
        .one()
    )
    hours = control_config.FriendlyHours(
        control_config.parse_windows(json.loads(profile["windows"])),
        profile["weekends"],
        profile["holidays"],
    )
    site_id, tz = _site(conn, account.account_id)
    days = frozenset(
        date.fromisoformat(d)
        for d in conn.execute(
            select(site_holidays.c.day).where(site_holidays.c.site_id == site_id)
        ).scalars()
    )
    return hours.contains(at, tz, days)


def _site(conn: Connection, account_id: int) -> tuple[int, ZoneInfo]:
    row = raw_rows(
        conn,
        "SELECT s.id, s.timezone FROM meter_assignments ma JOIN meters m ON m.id = ma.meter_id "
        "JOIN sites s ON s.id = m.site_id "
        "WHERE ma.account_id = :account ORDER BY ma.start_at DESC LIMIT 1",
        account=account_id,
    )
    return row[0][0], zone(row[0][1])


def net_balances(
    conn: Connection, account_ids: Iterable[int], *, lock: bool = False, as_money: bool = False
) -> dict[int, int]:
    """Wallet minus what is owed on arrears, per account, in fen — for a quantity account (购量)
    its quantity left in hundredths instead, what its thresholds are read in (``as_money``: the
    money for every account, as a forecast from money spent needs). With ``lock``, read under the
    balances' row locks (PostgreSQL), in the ingest's order: for a caller that decides on them
    without having posted (the tick), so a recharge committing meanwhile cannot be overruled
    by a decision on the balance before it."""
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    if lock:
        owned = conn.execute(
            select(accounts.c.id, accounts.c.wallet_id, accounts.c.arrears_id).where(
                accounts.c.id.in_(ids)
            )
        ).all()
        held = ledger.lock_balances(conn, [i for row in owned for i in row[1:]])
        found = {
            int(row.id): held[row.wallet_id].balance_fen + held[row.arrears_id].balance_fen
            for row in owned
        }
        return found if as_money else quantity.control_balances(conn, found)
    rows = conn.execute(
        select(accounts.c.id, ledger_accounts.c.balance_fen.label("wallet"))
        .join(ledger_accounts, ledger_accounts.c.id == accounts.c.wallet_id)
        .where(accounts.c.id.in_(ids))
    ).all()
    arrears = {
        int(row[0]): int(row[1])
        for row in conn.execute(
            select(accounts.c.id, ledger_accounts.c.balance_fen)
            .join(ledger_accounts, ledger_accounts.c.id == accounts.c.arrears_id)
            .where(accounts.c.id.in_(ids))
        )
    }
    found = {int(row.id): int(row.wallet) + int(arrears.get(row.id, 0)) for row in rows}
    return found if as_money else quantity.control_balances(conn, found)


def watch_thresholds(conn: Connection, account_ids: Iterable[int]) -> dict[int, int]:
    """Each account's watch threshold in fen (0 — cut at zero — without a stored policy)."""
    ids = sorted(set(account_ids))
    found = (
        dict(
            raw_rows(
                conn,
                "SELECT account_id, watch_fen FROM account_controls WHERE account_id IN :ids",
                ids=ids,
            )
        )
        if ids
        else {}
    )
    return {account_id: int(found.get(account_id, 0)) for account_id in ids}
