"""Reading the control loop's settings back: alarm plans, friendly-hour profiles and an account's
supply policy with its control state. Every read is scoped to the caller's organisation; another
organisation's ids are "not found". The writes live in :mod:`meterdesk.billing.control_admin`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, select

from meterdesk.billing import control_config, control_state
from meterdesk.billing.tables import account_controls, accounts, alarm_plans, friendly_profiles
from meterdesk.db.database import Database
from meterdesk.shared.errors import NotFoundError
from meterdesk.shared.money import format_money, parse_money


@dataclass(frozen=True)
class AlarmPlanView:
    id: int
    name: str
    levels: list[dict[str, Any]]  # as :func:`control_config.parse_levels` takes them
    created_at: datetime


@dataclass(frozen=True)
class FriendlyProfileView:
    id: int
    name: str
    windows: list[dict[str, str]]  # [{"start": "20:00", "end": "08:00"}], local wall time
    weekends: bool
    holidays: bool


@dataclass(frozen=True)
class PolicyView:
    """An account's supply policy (defaults while it has none of its own) and control state."""

    account_id: int
    number: str
    alarm_plan_id: int | None
    alarm_plan: str | None
    alarm_amounts: dict[str, str]  # per-account level amounts, {"1": "30.00"}
    friendly_profile_id: int | None
    friendly_profile: str | None
    cut_at: str
    protect: bool
    restore_threshold_fen: int
    restore_mode: str
    emergency_credit_fen: int
    supply: str  # on | off | cut_pending
    emergency_outstanding_fen: int
    alarms_sent: dict[str, int]  # level → sends since it was last re-armed
    version: int
    updated_at: datetime | None


def _plan(row: Any) -> AlarmPlanView:
    levels = json.loads(
        control_config.levels_to_json(control_config.parse_levels(json.loads(row.levels)))
    )
    return AlarmPlanView(int(row.id), str(row.name), levels, row.created_at)


def _profile(row: Any) -> FriendlyProfileView:
    return FriendlyProfileView(
        int(row.id), str(row.name), json.loads(row.windows), bool(row.weekends), bool(row.holidays)
    )


def _owned(conn: Connection, table: Table, organisation_id: int, row_id: int, what: str) -> Any:
    row = conn.execute(
        select(table).where(table.c.id == row_id, table.c.organisation_id == organisation_id)
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"{what} {row_id} not found")
    return row


def _all(conn: Connection, table: Table, organisation_id: int) -> list[Any]:
    return list(
        conn.execute(
            select(table).where(table.c.organisation_id == organisation_id).order_by(table.c.name)
        )
    )


def list_alarm_plans(db: Database, *, organisation_id: int) -> list[AlarmPlanView]:
    """The organisation's alarm plans by name."""
    with db.read() as conn:
        return [_plan(row) for row in _all(conn, alarm_plans, organisation_id)]


def alarm_plan(db: Database, *, organisation_id: int, plan_id: int) -> AlarmPlanView:
    with db.read() as conn:
        return _plan(_owned(conn, alarm_plans, organisation_id, plan_id, "alarm plan"))


def list_friendly_profiles(db: Database, *, organisation_id: int) -> list[FriendlyProfileView]:
    """The organisation's friendly-hours profiles by name."""
    with db.read() as conn:
        return [_profile(row) for row in _all(conn, friendly_profiles, organisation_id)]


def friendly_profile(db: Database, *, organisation_id: int, profile_id: int) -> FriendlyProfileView:
    with db.read() as conn:
        return _profile(
            _owned(conn, friendly_profiles, organisation_id, profile_id, "friendly-hours profile")
        )


def named_id(conn: Connection, table: Table, organisation_id: int, name: str, what: str) -> int:
    """The id of the organisation's alarm plan or friendly-hours profile of that name."""
    found = conn.execute(
        select(table.c.id).where(table.c.organisation_id == organisation_id, table.c.name == name)
    ).scalar_one_or_none()
    if found is None:
        raise NotFoundError(f"{what} {name!r} not found")
    return int(found)


def id_of_name(db: Database, *, organisation_id: int, table: Table, name: str, what: str) -> int:
    with db.read() as conn:
        return named_id(conn, table, organisation_id, name, what)


def name_of(db: Database, *, organisation_id: int, table: Table, row_id: int, what: str) -> str:
    """The name of an alarm plan or friendly-hours profile of the organisation (the policy
    change takes names)."""
    with db.read() as conn:
        return str(_owned(conn, table, organisation_id, row_id, what).name)


def account_policy(db: Database, *, organisation_id: int, account_id: int) -> PolicyView:
    """The account's policy as the control loop applies it, and where the loop stands."""
    with db.read() as conn:
        account = _owned(conn, accounts, organisation_id, account_id, "account")
        row = (
            conn.execute(
                select(
                    account_controls,
                    alarm_plans.c.name.label("plan_name"),
                    friendly_profiles.c.name.label("profile_name"),
                )
                .outerjoin(alarm_plans, alarm_plans.c.id == account_controls.c.alarm_plan_id)
                .outerjoin(
                    friendly_profiles,
                    friendly_profiles.c.id == account_controls.c.friendly_profile_id,
                )
                .where(account_controls.c.account_id == account_id)
            )
            .mappings()
            .one_or_none()
        )
    return _policy_view(int(account.id), str(account.number), row)


def _policy_view(account_id: int, number: str, row: Any) -> PolicyView:
    values: dict[str, Any] = (
        dict(row) if row is not None else control_state.default_policy_columns()
    )
    state = control_config.state_from_json(values["state"]) if row is not None else None
    overrides = json.loads(values["alarm_overrides"]) if values["alarm_overrides"] else {}
    return PolicyView(
        account_id=account_id,
        number=number,
        alarm_plan_id=values["alarm_plan_id"],
        alarm_plan=values.get("plan_name"),
        alarm_amounts={
            str(k): format_money(parse_money(v, field="alarm amount")) for k, v in overrides.items()
        },
        friendly_profile_id=values["friendly_profile_id"],
        friendly_profile=values.get("profile_name"),
        cut_at=str(values["cut_at"]),
        protect=bool(values["protect"]),
        restore_threshold_fen=int(values["restore_threshold_fen"]),
        restore_mode=str(values["restore_mode"]),
        emergency_credit_fen=int(values["emergency_credit_fen"]),
        supply="on" if state is None else state.supply.value,
        emergency_outstanding_fen=0 if state is None else state.emergency_outstanding_fen,
        alarms_sent={} if state is None else {str(k): v.sent for k, v in state.alarms.items()},
        version=int(values.get("version") or 0),
        updated_at=values.get("updated_at"),
    )
