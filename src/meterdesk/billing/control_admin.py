"""Managing the control loop: alarm plans, each account's supply policy, friendly-hour profiles,
site holiday calendars, and emergency credit (应急用电). Every change is scoped to the caller's
organisation and audited; a policy change is evaluated at once (e.g. protect on restores supply).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from meterdesk.audit import service as audit
from meterdesk.billing import control, control_config, control_send, control_state
from meterdesk.billing.accounts import account_by_number
from meterdesk.billing.cashier_repay import emergency_receivable
from meterdesk.billing.control_config import MAX_ALARM_LEVEL
from meterdesk.billing.control_read import named_id
from meterdesk.billing.model import BillingMode
from meterdesk.billing.policy import (
    Cause,
    ControlState,
    CutAt,
    RestoreMode,
    may_take_emergency_credit,
)
from meterdesk.billing.quantity_model import CreditUnit
from meterdesk.billing.tables import account_controls, alarm_plans, friendly_profiles, site_holidays
from meterdesk.db import counters
from meterdesk.db.database import Database
from meterdesk.ledger import repository as ledger
from meterdesk.ledger.model import Reason, TransferRequest
from meterdesk.shared.errors import ConflictError, NotFoundError, ValidationError
from meterdesk.shared.money import format_money, from_fen, parse_unsigned_money, to_fen
from meterdesk.sites.tables import sites

LEVEL_KEYS = frozenset(str(level) for level in range(1, MAX_ALARM_LEVEL + 1))


def create_alarm_plan(
    db: Database, *, organisation_id: int, name: str, levels: object, actor: str
) -> int:
    parsed = control_config.parse_levels(levels)
    at = db.clock()
    with db.transaction() as conn:
        try:
            result = conn.execute(
                insert(alarm_plans).values(
                    organisation_id=organisation_id,
                    name=name.strip(),
                    levels=control_config.levels_to_json(parsed),
                    created_at=at,
                )
            )
        except IntegrityError:
            raise ConflictError(f"alarm plan {name!r} already exists") from None
        key = result.inserted_primary_key
        assert key is not None
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="alarm_plan.create",
            subject=f"alarm_plan:{key[0]}",
            at=at,
        )
        return int(key[0])


def create_friendly_profile(
    db: Database,
    *,
    organisation_id: int,
    name: str,
    windows: object,
    weekends: bool,
    holidays: bool,
    actor: str,
) -> int:
    stored = control_config.windows_to_json(control_config.parse_windows(windows))
    at = db.clock()
    with db.transaction() as conn:
        try:
            result = conn.execute(
                insert(friendly_profiles).values(
                    organisation_id=organisation_id,
                    name=name.strip(),
                    windows=stored,
                    weekends=weekends,
                    holidays=holidays,
                )
            )
        except IntegrityError:
            raise ConflictError(f"friendly-hours profile {name!r} already exists") from None
        key = result.inserted_primary_key
        assert key is not None
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="friendly.create",
            subject=f"friendly:{key[0]}",
            at=at,
        )
        return int(key[0])


def set_site_holiday(
    db: Database,
    *,
    organisation_id: int,
    site_id: int,
    day: date,
    name: str,
    actor: str,
    remove: bool = False,
) -> None:
    at = db.clock()
    with db.transaction() as conn:
        if (
            conn.execute(
                select(sites.c.id).where(
                    sites.c.id == site_id, sites.c.organisation_id == organisation_id
                )
            ).first()
            is None
        ):
            raise NotFoundError(f"site {site_id} not found")
        conn.execute(
            delete(site_holidays).where(
                site_holidays.c.site_id == site_id, site_holidays.c.day == day.isoformat()
            )
        )
        if not remove:
            conn.execute(
                insert(site_holidays).values(
                    site_id=site_id, day=day.isoformat(), name=name or "holiday"
                )
            )
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="holiday.remove" if remove else "holiday.set",
            subject=f"site:{site_id}",
            at=at,
            detail={"day": day.isoformat(), "name": name},
        )


def list_site_holidays(db: Database, *, organisation_id: int, site_id: int) -> list[dict[str, str]]:
    with db.read() as conn:
        rows = conn.execute(
            select(site_holidays.c.day, site_holidays.c.name)
            .join(sites, sites.c.id == site_holidays.c.site_id)
            .where(site_holidays.c.site_id == site_id, sites.c.organisation_id == organisation_id)
            .order_by(site_holidays.c.day)
        ).all()
    return [{"day": row.day, "name": row.name} for row in rows]


@dataclass(frozen=True)
class PolicyChange:
    """Fields left as None stay as they are."""

    alarm_plan: str | None = None
    alarm_overrides: dict[str, str] | None = None  # {"1": "30.00"} per-account amounts
    friendly_profile: str | None = None
    cut_at: str | None = None
    protect: bool | None = None
    restore_threshold: str | None = None
    restore_mode: str | None = None
    emergency_credit: str | None = None


def set_account_policy(
    db: Database,
    *,
    organisation_id: int,
    number: str,
    change: PolicyChange,
    actor: str,
    outbox: control_send.Outbox,
) -> dict[str, Any]:
    at = db.clock()
    with db.transaction() as conn:
        # Locks in the order of ingest, recharge and tick (account row, wallet and arrears by
        # id, then the control row), and the decision below is taken on the balances read under
        # them: a recharge or batch committing between an unlocked read and the decision was
        # overruled (a tenant just recharged cut off).
        account = account_by_number(conn, organisation_id=organisation_id, number=number, lock=True)
        account_id = int(str(account["id"]))
        balances = control.net_balances(conn, [account_id], lock=True)
        values = _policy_values(conn, organisation_id, change)
        if values.get("emergency_credit_fen", 0) > 0:
            _refuse_emergency_credit_on_meter_billing(account)
        current = (
            conn.execute(
                select(account_controls).where(account_controls.c.account_id == account_id)
            )
            .mappings()
            .one_or_none()
        )
        if current is None:
            conn.execute(
                insert(account_controls).values(
                    account_id=account_id,
                    **{**control_state.default_policy_columns(), **values},
                    **control_state.state_values(ControlState(), (0, False), 0, at),
                )
            )
        else:
            conn.execute(
                update(account_controls)
                .where(account_controls.c.account_id == account_id)
                .values(**values, updated_at=at)
            )
        counters.bump(conn, counters.CONTROL_POLICY)
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="policy.set",
            subject=f"account:{number}",
            at=at,
            detail={k: v for k, v in change.__dict__.items() if v is not None},
        )
        control.evaluate_in(
            conn, balances=balances, at=at, cause=Cause.POLICY_CHANGE, outbox=outbox
        )
        return {"account": number, **{k: v for k, v in values.items()}}


def _policy_values(conn: Connection, organisation_id: int, change: PolicyChange) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if change.alarm_plan is not None:
        values["alarm_plan_id"] = (
            named_id(conn, alarm_plans, organisation_id, change.alarm_plan, "alarm plan")
            if change.alarm_plan
            else None
        )
    if change.friendly_profile is not None:
        values["friendly_profile_id"] = (
            named_id(
                conn,
                friendly_profiles,
                organisation_id,
                change.friendly_profile,
                "friendly-hours profile",
            )
            if change.friendly_profile
            else None
        )
    if change.alarm_overrides is not None:
        _check_alarm_overrides(change.alarm_overrides)
        values["alarm_overrides"] = (
            json.dumps(change.alarm_overrides) if change.alarm_overrides else None
        )
    if change.cut_at is not None:
        values["cut_at"] = _member(CutAt, change.cut_at, "cut_at")
    if change.restore_mode is not None:
        values["restore_mode"] = _member(RestoreMode, change.restore_mode, "restore_mode")
    if change.protect is not None:
        values["protect"] = change.protect
    if change.restore_threshold is not None:
        values["restore_threshold_fen"] = to_fen(
            parse_unsigned_money(change.restore_threshold, field="restore_threshold")
        )
    if change.emergency_credit is not None:
        values["emergency_credit_fen"] = to_fen(
            parse_unsigned_money(change.emergency_credit, field="emergency_credit")
        )
    return values


def _check_alarm_overrides(overrides: dict[str, str]) -> None:
    for level, amount in overrides.items():
        # Only a plan's level numbers are ever looked up: "9" or "abc" was stored and never
        # fired, while the operator believed an alarm was set.
        if level not in LEVEL_KEYS:
            raise ValidationError(
                f"alarm level {level!r}: a level number from 1 to {MAX_ALARM_LEVEL}"
            )
        parse_unsigned_money(amount, field=f"alarm level {level}")


def _member(kind: Any, value: str, field: str) -> str:
    try:
        return str(kind(value).value)
    except ValueError:
        raise ValidationError(
            f"{field}: {value!r} is not one of {', '.join(k.value for k in kind)}"
        ) from None


def _refuse_emergency_credit_on_meter_billing(account: dict[str, object]) -> None:
    """A meter-billing (表端计费) account spends the money the meter holds, and only a recharge
    pushed to the meter reaches it: emergency credit on the platform's wallet would never reach
    the meter, and the next recharge would push all of itself while repaying it here, leaving the
    meter and the ledger apart. The meter's own overdraft limit is the emergency credit there."""
    if account["billing_mode"] == BillingMode.METER.value:
        raise ConflictError(
            f"account {account['number']} is billed on the meter (表端计费): emergency credit is "
            "the meter's own overdraft limit (write_limits overdraft_limit=AMOUNT)"
        )
    if account["credit_unit"] == CreditUnit.QUANTITY.value:
        raise ConflictError(
            f"account {account['number']} buys quantity (购量): emergency credit is money, which "
            "it has no way to use; give it an overdraft in quantity instead (cut_at overdraft)"
        )


def take_emergency_credit(
    db: Database, *, organisation_id: int, number: str, actor: str, outbox: control_send.Outbox
) -> int:
    """Credit the account's emergency amount once; it is owed until the next recharge repays it.
    Returns the transfer id."""
    at = db.clock()
    with db.transaction() as conn:
        account = account_by_number(conn, organisation_id=organisation_id, number=number, lock=True)
        account_id = int(str(account["id"]))
        _refuse_emergency_credit_on_meter_billing(account)
        # Under the balances' locks (as set_account_policy): a batch deducting meanwhile would
        # otherwise have supply restored on the balance before it.
        balance = control.net_balances(conn, [account_id], lock=True)[account_id]
        loaded = control_state.load_accounts(conn, {account_id: 0}, everyone=True)
        if not loaded:
            raise ConflictError(f"account {number} is not open")
        refusal = may_take_emergency_credit(loaded[0].policy, loaded[0].state, balance)
        if refusal:
            raise ConflictError(refusal)
        amount = loaded[0].policy.emergency_credit_fen
        source = emergency_receivable(conn, organisation_id, at)
        request = TransferRequest(
            organisation_id=organisation_id,
            idempotency_key=f"emergency:{account_id}:{loaded[0].version}",
            debit_account_id=source,
            credit_account_id=int(str(account["wallet_id"])),
            amount_fen=amount,
            reason=Reason.EMERGENCY_CREDIT,
            actor=actor,
            created_at=at,
            account_id=account_id,
            memo="emergency credit (应急用电)",
        )
        ledger.apply_transfers(conn, [request])
        transfer_id = ledger.find_by_keys(conn, [request.idempotency_key])[request.idempotency_key][
            "id"
        ]
        control_state.record_emergency(conn, account_id=account_id, outstanding_fen=amount, at=at)
        control.evaluate_in(
            conn,
            balances={account_id: balance + amount},
            at=at,
            cause=Cause.RECHARGE,
            outbox=outbox,
        )
        outbox.message(
            conn,
            organisation_id=organisation_id,
            account_id=account_id,
            event="emergency_credit_taken",
            key=f"emergency:{account_id}:{loaded[0].version}",
            params={"amount": format_money(from_fen(amount))},
            channels=None,
        )
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="money.emergency_credit",
            subject=f"account:{number}",
            at=at,
            detail={"amount": format_money(from_fen(amount))},
        )
        return int(str(transfer_id))
