"""The prepaid control loop (F-ALARM, F-TRIP, F-RESTORE): decisions taken in the caller's
transaction — the ingest batch that deducted, the recharge that credited, the scheduler tick —
and sent out through the outbox: device commands and tenant messages are rows written in the
same transaction, delivered after commit. A decision is made once: the account's control state
and its ``version`` move in the same transaction, and every outbox key carries the version.

Accounts without a stored policy follow the default prepaid policy: no alarms, cut at zero,
restore directly once the balance is above zero. Meter-billing accounts (表端计费) get alarms
and messages only; their meters cut and restore themselves.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, bindparam, insert, select, update

from meterdesk.billing import control_config
from meterdesk.billing.model import BillingMode
from meterdesk.billing.policy import (
    Action,
    Cause,
    ControlState,
    CutAt,
    Decision,
    Policy,
    RestoreMode,
    Situation,
    Supply,
    decide,
)
from meterdesk.billing.tables import (
    account_controls,
    accounts,
    friendly_profiles,
    meter_assignments,
    site_holidays,
)
from meterdesk.db.bulk import raw_rows
from meterdesk.ledger.tables import ledger_accounts
from meterdesk.metering.tables import meters
from meterdesk.shared.money import format_money, from_fen
from meterdesk.shared.time import zone

CONTROL_ACTOR = "system:control"
COMMAND_FOR = {
    ("electricity", Action.CUT): "relay_trip",
    ("water", Action.CUT): "valve_close",
    ("electricity", Action.RESTORE): "relay_close",
    ("water", Action.RESTORE): "valve_open",
    ("electricity", Action.PROTECT_ON): "protect_on",
    ("electricity", Action.PROTECT_OFF): "protect_off",
}
EVENT_FOR = {Action.CUT: "supply_cut", Action.RESTORE: "supply_restored"}


@dataclass(frozen=True)
class CommandRequest:
    """A desired state for one meter, keyed by the decision that wants it."""

    organisation_id: int
    meter_id: int
    kind: str
    key: str
    params: dict[str, Any]


class Outbox(Protocol):
    """Where decisions leave: both calls write rows in the caller's transaction."""

    def send_commands(self, conn: Connection, requests: Sequence[CommandRequest]) -> None: ...

    def message(
        self,
        conn: Connection,
        *,
        organisation_id: int,
        account_id: int,
        event: str,
        key: str,
        params: dict[str, Any],
        channels: tuple[str, ...] | None,
    ) -> None: ...


@dataclass
class RecordingOutbox:
    """An outbox that only remembers what it was given (tests, and runs without devices)."""

    commands: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)

    def send_commands(self, conn: Connection, requests: Sequence[CommandRequest]) -> None:
        self.commands.extend(asdict(request) for request in requests)

    def message(self, conn: Connection, **fields: Any) -> None:
        self.messages.append(fields)


@dataclass
class _Account:
    account_id: int
    organisation_id: int
    billing_mode: BillingMode
    floor_fen: int
    policy: Policy
    state: ControlState
    version: int
    stored: bool
    friendly_profile_id: int | None


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
    changed: list[tuple[_Account, ControlState]] = []
    deciding: list[tuple[_Account, list[Decision], Situation]] = []
    for account in _load(conn, balances, everyone=everyone or cause is Cause.POLICY_CHANGE):
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
    _save(conn, changed, at)
    _send(conn, deciding, outbox)
    return made


def _load(conn: Connection, balances: dict[int, int], *, everyone: bool = False) -> list[_Account]:
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
    return [_account(row) for row in rows]


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


def _account(row: tuple[Any, ...]) -> _Account:
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
    return _Account(
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


def _friendly(conn: Connection, account: _Account, at: datetime) -> bool:
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


def _save(conn: Connection, changed: list[tuple[_Account, ControlState]], at: datetime) -> None:
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
        conn.execute(
            update(account_controls)
            .where(account_controls.c.account_id == bindparam("key_account_id"))
            .values({name: bindparam(name) for name in updates[0] if name != "key_account_id"}),
            updates,
        )
    if inserts:
        conn.execute(insert(account_controls), inserts)


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


def _send(
    conn: Connection,
    deciding: list[tuple[_Account, list[Decision], Situation]],
    outbox: Outbox,
) -> None:
    """Messages one by one; the device commands of every account together, in order."""
    controllable = _controllable_meters(
        conn,
        [account.account_id for account, decisions, _ in deciding
         if any(decision.action is not Action.ALARM for decision in decisions)],
    )  # fmt: skip
    wanted: list[CommandRequest] = []
    for account, decisions, now in deciding:
        version = account.version + 1  # as _save stored it
        meters_of = controllable.get(account.account_id, [])
        for decision in decisions:
            key = f"control:{account.account_id}:{version}:{decision.action.value}"
            params = {"balance": format_money(from_fen(now.balance_fen)), "at": now.at.isoformat()}
            if decision.action is Action.ALARM:
                _alarm_message(conn, account, decision, key, params, now, outbox)
                continue
            wanted.extend(_device_commands(account, decision, key, meters_of))
            if decision.action in EVENT_FOR and meters_of:
                outbox.message(
                    conn,
                    organisation_id=account.organisation_id,
                    account_id=account.account_id,
                    event=EVENT_FOR[decision.action],
                    key=key,
                    params=params,
                    channels=None,
                )
    if wanted:
        outbox.send_commands(conn, wanted)


def _alarm_message(
    conn: Connection,
    account: _Account,
    decision: Decision,
    key: str,
    params: dict[str, Any],
    now: Situation,
    outbox: Outbox,
) -> None:
    level = next(level for level in account.policy.alarms if level.level == decision.level)
    outbox.message(
        conn,
        organisation_id=account.organisation_id,
        account_id=account.account_id,
        event=f"alarm_level_{decision.level}",
        key=f"{key}:{decision.level}:{decision.repeat}",
        params={
            **params,
            "level": decision.level,
            "repeat": decision.repeat,
            "threshold": None
            if level.threshold_fen is None
            else format_money(from_fen(level.threshold_fen)),
            "days_left": now.days_left,
        },
        channels=level.channels,
    )


def _device_commands(
    account: _Account, decision: Decision, key: str, controllable: list[tuple[int, str]]
) -> list[CommandRequest]:
    found = []
    for meter_id, utility in controllable:
        kind = COMMAND_FOR.get((utility, decision.action))
        if kind == "relay_close" and decision.restore_mode is RestoreMode.CLOSE_ALLOWED:
            kind = "relay_close_allowed"
        if kind is not None:
            found.append(
                CommandRequest(
                    organisation_id=account.organisation_id,
                    meter_id=meter_id,
                    kind=kind,
                    key=f"{key}:{meter_id}",
                    params={"reason": decision.action.value, "account_id": account.account_id},
                )
            )
    return found


def _controllable_meters(
    conn: Connection, account_ids: list[int]
) -> dict[int, list[tuple[int, str]]]:
    """Per account, its meters that can be switched remotely (manual meters have no device)."""
    if not account_ids:
        return {}
    rows = conn.execute(
        select(meter_assignments.c.account_id, meters.c.id, meters.c.utility)
        .join(meter_assignments, meter_assignments.c.meter_id == meters.c.id)
        .where(
            meter_assignments.c.account_id.in_(sorted(set(account_ids))),
            meter_assignments.c.end_at.is_(None),
            meters.c.protocol != "manual",
        )
        .order_by(meter_assignments.c.account_id, meters.c.id)
    ).all()
    found: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for row in rows:
        found[int(row.account_id)].append((int(row.id), str(row.utility)))
    return found


def net_balances(conn: Connection, account_ids: Iterable[int]) -> dict[int, int]:
    """Wallet minus what is owed on arrears, per account, in fen."""
    ids = sorted(set(account_ids))
    if not ids:
        return {}
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
    return {int(row.id): int(row.wallet) + int(arrears.get(row.id, 0)) for row in rows}


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
    loaded = _load(conn, {account_id: 0}, everyone=True)
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
