"""The control loop's stored state (``account_controls``): the accounts a decision needs, read
with their policy and state in one statement; the changed states written back with their
``version`` one higher; and the single-account reads and writes the desk and the admin use
(emergency credit outstanding, a fresh row's default policy).

The ``watch_fen`` / ``active`` columns written beside the JSON state are the hot path's filter:
ingest asks the control loop only about accounts at or below their watch threshold or with an
active state (:func:`watch`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Update, bindparam, insert, select, update

from meterdesk.billing import control_config
from meterdesk.billing.model import BillingMode
from meterdesk.billing.policy import ControlState, CutAt, Policy, RestoreMode, Supply
from meterdesk.billing.tables import account_controls
from meterdesk.db.bulk import raw_rows


@dataclass
class ControlledAccount:
    """An open account as the control loop sees it: its policy, state and stored version."""

    account_id: int
    organisation_id: int
    billing_mode: BillingMode
    floor_fen: int
    policy: Policy
    state: ControlState
    version: int
    stored: bool
    friendly_profile_id: int | None


def load_accounts(
    conn: Connection, balances: dict[int, int], *, everyone: bool = False
) -> list[ControlledAccount]:
    """The accounts that need a decision: at or below their watch threshold, or with an active
    state (supply off or pending, alarms sent). ``everyone`` skips the filter (policy changes)."""
    if not balances:
        return []
    params: dict[str, int] = {}
    values = []
    for i, (account_id, balance) in enumerate(sorted(balances.items())):
        params[f"a{i}"], params[f"b{i}"] = account_id, balance
        values.append(f"(:a{i}, :b{i})")
    wanted = (
        ""
        if everyone
        else "AND (b.balance <= COALESCE(c.watch_fen, 0) OR COALESCE(c.active, FALSE)) "
    )
    rows = raw_rows(
        conn,
        f"WITH b(account_id, balance) AS (VALUES {', '.join(values)}) "  # noqa: S608 - placeholders only
        "SELECT a.id, a.organisation_id, a.billing_mode, w.floor_fen, c.cut_at, c.protect, c.restore_threshold_fen, "
        "c.restore_mode, c.emergency_credit_fen, c.state, c.version, c.friendly_profile_id, c.alarm_overrides, "
        "p.levels FROM b JOIN accounts a ON a.id = b.account_id JOIN ledger_accounts w ON w.id = a.wallet_id "
        "LEFT JOIN account_controls c ON c.account_id = a.id LEFT JOIN alarm_plans p ON p.id = c.alarm_plan_id "
        f"WHERE a.status = 'open' {wanted}",
        **params,
    )
    return [_from_row(row) for row in rows]


def watch(policy: Policy, state: ControlState) -> tuple[int, bool]:
    """(watch threshold in fen, active) for the hot-path filter."""
    thresholds = [level.threshold_fen for level in policy.alarms if level.threshold_fen is not None]
    highest = max([policy.cut_threshold_fen, *thresholds])
    active = (
        state.supply is not Supply.ON
        or any(a.sent for a in state.alarms.values())
        or state.protect_sent != policy.protect
    )
    return highest, active or state.emergency_outstanding_fen > 0


def _from_row(row: tuple[Any, ...]) -> ControlledAccount:
    (
        account_id,
        org,
        mode,
        floor,
        cut_at,
        protect,
        restore_fen,
        restore_mode,
        emergency,
        state,
        version,
        friendly_id,
        overrides,
        levels,
    ) = row
    alarm_levels = control_config.parse_levels(json.loads(levels)) if levels else ()
    if overrides:
        alarm_levels = _override(alarm_levels, json.loads(overrides))
    billing_mode = BillingMode(mode)
    policy = Policy(
        alarms=alarm_levels,
        cut_at=CutAt(cut_at or CutAt.ZERO.value),
        overdraft_fen=-(floor or 0),
        protect=bool(protect) or billing_mode is BillingMode.METER,  # the meter itself decides cuts
        restore_threshold_fen=int(restore_fen or 0),
        restore_mode=RestoreMode(restore_mode or RestoreMode.DIRECT.value),
        emergency_credit_fen=int(emergency or 0),
    )
    control_state = (
        control_config.state_from_json(state)
        if state
        else ControlState(protect_sent=billing_mode is BillingMode.METER)
    )
    return ControlledAccount(
        account_id,
        org,
        billing_mode,
        floor or 0,
        policy,
        control_state,
        int(version or 0),
        state is not None,
        friendly_id,
    )


def _override(levels: tuple[Any, ...], overrides: dict[str, str]) -> tuple[Any, ...]:
    from dataclasses import replace

    from meterdesk.shared.money import parse_money, to_fen

    return tuple(
        replace(
            level, threshold_fen=to_fen(parse_money(overrides[str(level.level)])), days_left=None
        )
        if str(level.level) in overrides
        else level
        for level in levels
    )


def save_states(
    conn: Connection, changed: list[tuple[ControlledAccount, ControlState]], at: datetime
) -> None:
    """Store each changed state with its version one higher (one statement per kind of write
    for the whole batch)."""
    updates, inserts = [], []
    for account, state in changed:
        values = state_values(state, watch(account.policy, state), account.version + 1, at)
        if account.stored:
            updates.append({"key_account_id": account.account_id, **values})
        else:
            inserts.append({"account_id": account.account_id, **default_policy_columns(), **values})
    if updates:
        names = tuple(name for name in updates[0] if name != "key_account_id")
        conn.execute(_update_states(names), updates)
    if inserts:
        conn.execute(_INSERT_STATES, inserts)


# Built once (every batch that decides writes states; building a statement and its cache key
# cost more than running it).
_INSERT_STATES = insert(account_controls)


@lru_cache(maxsize=8)
def _update_states(names: tuple[str, ...]) -> Update:
    return (
        update(account_controls)
        .where(account_controls.c.account_id == bindparam("key_account_id"))
        .values({name: bindparam(name) for name in names})
    )


def state_values(
    state: ControlState, watching: tuple[int, bool], version: int, at: datetime
) -> dict[str, Any]:
    """The ``account_controls`` columns that follow from a control state."""
    watch_fen, active = watching
    return {
        "state": control_config.state_to_json(state),
        "version": version,
        "updated_at": at,
        "watch_fen": watch_fen,
        "active": active,
        **control_config.grid_columns(state, active),
    }


def default_policy_columns() -> dict[str, Any]:
    return {
        "alarm_plan_id": None,
        "alarm_overrides": None,
        "friendly_profile_id": None,
        "cut_at": CutAt.ZERO.value,
        "protect": False,
        "restore_threshold_fen": 0,
        "restore_mode": RestoreMode.DIRECT.value,
        "emergency_credit_fen": 0,
    }


def load_state(conn: Connection, account_id: int) -> tuple[ControlState, int, bool]:
    """An account's control state, version, and whether a row exists."""
    row = conn.execute(
        select(account_controls.c.state, account_controls.c.version).where(
            account_controls.c.account_id == account_id
        )
    ).one_or_none()
    if row is None:
        return ControlState(), 0, False
    return control_config.state_from_json(row.state), int(row.version), True


def record_emergency(
    conn: Connection, *, account_id: int, outstanding_fen: int, at: datetime
) -> None:
    """Store how much emergency credit is still owed (after it is taken or repaid)."""
    state, version, stored = load_state(conn, account_id)
    new_state = replace(state, emergency_outstanding_fen=outstanding_fen)
    loaded = load_accounts(conn, {account_id: 0}, everyone=True)
    watching = watch(loaded[0].policy, new_state) if loaded else (0, outstanding_fen > 0)
    values = state_values(new_state, watching, version + 1, at)
    if stored:
        conn.execute(
            update(account_controls)
            .where(account_controls.c.account_id == account_id)
            .values(**values)
        )
    else:
        conn.execute(
            insert(account_controls).values(
                account_id=account_id, **default_policy_columns(), **values
            )
        )
