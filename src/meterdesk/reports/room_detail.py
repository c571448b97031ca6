"""Room detail (F-MON-ROOM): the room, its open account and policy, its meters with live values
and device state, today's energy and money, recent readings and orders. Read-only; every query
is scoped to the caller's organisation (another organisation's room is not found)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, select

from meterdesk.billing import supply_drift
from meterdesk.billing.lines import select_lines
from meterdesk.billing.policy import RestoreMode, Supply
from meterdesk.billing.tables import (
    account_controls,
    accounts,
    alarm_plans,
    friendly_profiles,
    meter_assignments,
)
from meterdesk.db.types import instant_int
from meterdesk.devices.tables import device_status
from meterdesk.ledger.tables import NOT_A_DEDUCTION, ledger_accounts, transfers
from meterdesk.metering.tables import meters, readings
from meterdesk.shared.errors import NotFoundError
from meterdesk.sites.tables import buildings, customers, floors, rooms, sites
from meterdesk.tariffs.tables import tariffs

DEFAULT_POLICY: dict[str, Any] = {
    "protect": False,
    "cut_at": "zero",
    "restore_mode": "direct",
    "restore_threshold_fen": 0,
    "emergency_credit_fen": 0,
    "alarm_plan": None,
    "plan_levels": [],
    "alarm_overrides": {},
    "friendly_profile": None,
}
ORDER_REASONS = ("recharge", "refund", "reversal", "emergency_credit", "settlement")


@dataclass(frozen=True)
class RoomHeader:
    id: int
    name: str
    kind: str
    area_m2: Decimal | None
    site: str
    building: str
    building_id: int
    floor: str
    floor_id: int
    timezone: str


@dataclass
class AccountView:
    id: int
    number: str
    billing_mode: str
    customer: str
    phone: str | None
    balance_fen: int
    arrears_fen: int
    overdraft_fen: int
    opened_at: datetime | None = None
    customer_id: int | None = None  # the customer's page links from the tenant's name
    policy: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class MeterView:
    id: int
    number: str
    utility: str
    kind: str
    tariff: str | None
    tariff_id: int | None
    connection: str  # online | lost | unknown
    last_seen_at: datetime | None
    relay: str | None
    valve: str | None
    protected: bool | None
    live: dict[str, Any]
    today_quantity: Decimal = Decimal(0)
    today_cost: Decimal = Decimal(0)
    tariff_since: datetime | None = None  # the current tariff prices what follows this instant
    drift: supply_drift.Drift | None = None  # the read contradicts the account's decision
    drift_command: supply_drift.LatestSwitch | None = None  # the command putting it back


def room_header(conn: Connection, organisation_id: int, room_id: int) -> RoomHeader:
    row = conn.execute(
        select(
            rooms.c.id,
            rooms.c.name,
            rooms.c.kind,
            rooms.c.area_m2,
            sites.c.name,
            buildings.c.name,
            buildings.c.id,
            floors.c.name,
            floors.c.id,
            sites.c.timezone,
        )
        .select_from(rooms.join(floors).join(buildings).join(sites))
        .where(rooms.c.id == room_id, rooms.c.organisation_id == organisation_id)
    ).first()
    if row is None:
        raise NotFoundError(f"room {room_id} not found")
    values: tuple[Any, ...] = tuple(row)
    return RoomHeader(*values)


def room_account(conn: Connection, organisation_id: int, room_id: int) -> AccountView | None:
    """The room's open account (the first, if there are several), with its supply policy."""
    wallet, owed = ledger_accounts.alias("wallet"), ledger_accounts.alias("owed")
    row = (
        conn.execute(
            select(
                accounts.c.id,
                accounts.c.number,
                accounts.c.billing_mode,
                accounts.c.opened_at,
                customers.c.name.label("customer"),
                customers.c.phone,
                accounts.c.customer_id,
                wallet.c.balance_fen,
                wallet.c.floor_fen,
                owed.c.balance_fen.label("owed"),
            )
            .join(customers, customers.c.id == accounts.c.customer_id)
            .join(wallet, wallet.c.id == accounts.c.wallet_id)
            .join(owed, owed.c.id == accounts.c.arrears_id)
            .where(
                accounts.c.room_id == room_id,
                accounts.c.organisation_id == organisation_id,
                accounts.c.status == "open",
            )
            .order_by(accounts.c.id)
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    view = AccountView(
        int(row["id"]), str(row["number"]), str(row["billing_mode"]), str(row["customer"]),
        row["phone"], int(row["balance_fen"]), -int(row["owed"]), -int(row["floor_fen"] or 0),
        row["opened_at"], int(row["customer_id"]),
    )  # fmt: skip
    view.policy, view.state = _policy(conn, view.id)
    return view


def _policy(conn: Connection, account_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    row = (
        conn.execute(
            select(
                account_controls,
                alarm_plans.c.name.label("alarm_plan"),
                alarm_plans.c.levels.label("plan_levels"),
                friendly_profiles.c.name.label("friendly_profile"),
            )
            .outerjoin(alarm_plans, alarm_plans.c.id == account_controls.c.alarm_plan_id)
            .outerjoin(
                friendly_profiles, friendly_profiles.c.id == account_controls.c.friendly_profile_id
            )
            .where(account_controls.c.account_id == account_id)
        )
        .mappings()
        .first()
    )
    if row is None:
        return dict(DEFAULT_POLICY), {"supply": "on", "alarms": {}}
    policy = {
        "protect": bool(row["protect"]),
        "cut_at": row["cut_at"],
        "restore_mode": row["restore_mode"],
        "restore_threshold_fen": int(row["restore_threshold_fen"]),
        "emergency_credit_fen": int(row["emergency_credit_fen"]),
        "alarm_plan": row["alarm_plan"],
        "plan_levels": json.loads(row["plan_levels"]) if row["plan_levels"] else [],
        "alarm_overrides": json.loads(row["alarm_overrides"]) if row["alarm_overrides"] else {},
        "friendly_profile": row["friendly_profile"],
    }
    return policy, json.loads(row["state"])


def room_meters(conn: Connection, organisation_id: int, room_id: int) -> list[MeterView]:
    rows = conn.execute(
        select(
            meters.c.id,
            meters.c.number,
            meters.c.utility,
            meters.c.kind,
            tariffs.c.name,
            tariffs.c.id,
            device_status.c.state,
            device_status.c.last_seen_at,
            device_status.c.relay,
            device_status.c.valve,
            device_status.c.protected,
            device_status.c.live,
            meter_assignments.c.start_at,
        )
        .select_from(
            meters.outerjoin(device_status, device_status.c.meter_id == meters.c.id)
            .outerjoin(
                meter_assignments,
                and_(
                    meter_assignments.c.meter_id == meters.c.id,
                    meter_assignments.c.end_at.is_(None),
                ),
            )
            .outerjoin(tariffs, tariffs.c.id == meter_assignments.c.tariff_id)
        )
        .where(meters.c.room_id == room_id, meters.c.organisation_id == organisation_id)
        .order_by(meters.c.utility, meters.c.number)
    ).all()
    return [
        MeterView(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6] or "unknown",
            r[7],
            r[8],
            r[9],
            None if r[10] is None else bool(r[10]),
            json.loads(r[11]) if r[11] else {},
            tariff_since=r[12],
        )
        for r in rows
    ]


def add_drift(conn: Connection, account: AccountView | None, views: list[MeterView]) -> None:
    """Mark the meters whose last read contradicts the account's supply decision (platform
    billing only: on meter billing the meter decides), as the control tick sees it, with the
    meter's latest relay or valve command when it is the one that puts the decision back."""
    if account is None or account.billing_mode != "platform" or not views:
        return
    latest = supply_drift.latest_switch_commands(conn, [view.id for view in views])
    for view in views:
        command = latest.get(view.id)
        view.drift = supply_drift.drift(
            supply=Supply(account.state.get("supply", Supply.ON.value)),
            protect=bool(account.policy.get("protect")),
            utility=view.utility,
            relay=view.relay,
            valve=view.valve,
            restore_mode=RestoreMode(account.policy.get("restore_mode") or "direct"),
            armed=command is not None and command.armed,
        )
        if view.drift is not None and command is not None and command.kind == view.drift.kind:
            # a confirmed one is history: the meter has flipped again since
            view.drift_command = None if command.status == "confirmed" else command


def add_usage(
    conn: Connection, meter_views: list[MeterView], start: datetime, end: datetime
) -> None:
    """Fill each meter's energy (or water) and money in ``[start, end)`` from its charge lines."""
    by_id = {m.id: m for m in meter_views}
    if not by_id:
        return
    rows = conn.execute(
        select_lines(
            ("meter_id", "quantity", "cost"),
            lambda line: (
                line["meter_id"].in_(list(by_id)),
                line["active"].is_(True),
                line["segment_start"] >= instant_int(start),
                line["segment_start"] < instant_int(end),
                # implied (a segment ends after it starts, inside its interval); lets the
                # meter's (interval end) index skip its history before ``start``
                line["interval_end"] > instant_int(start),
            ),
        )
    )
    for meter_id, quantity, cost in rows:
        view = by_id[meter_id]
        view.today_quantity += quantity
        view.today_cost += cost


def recent_readings(
    conn: Connection, meter_ids: list[int], limit: int = 12
) -> list[dict[str, Any]]:
    if not meter_ids:
        return []
    rows = conn.execute(
        select(
            meters.c.number,
            readings.c.measured_at,
            readings.c.received_at,
            readings.c.register_total,
            readings.c.source,
        )
        .join(meters, meters.c.id == readings.c.meter_id)
        .where(readings.c.meter_id.in_(meter_ids))
        .order_by(readings.c.measured_at.desc())
        .limit(limit)
    ).mappings()
    return [dict(row) for row in rows]


def orders(conn: Connection, account_id: int, limit: int = 12) -> list[dict[str, Any]]:
    """Desk and online money of the account (recharges, refunds, reversals …), newest first."""
    rows = conn.execute(
        select(
            transfers.c.id,
            transfers.c.created_at,
            transfers.c.reason,
            transfers.c.amount_fen,
            transfers.c.method,
            transfers.c.actor,
            transfers.c.reference,
        )
        .where(
            transfers.c.account_id == account_id,
            NOT_A_DEDUCTION,  # the account index holds only these: the deductions are skipped
            transfers.c.reason.in_(ORDER_REASONS),
        )
        .order_by(transfers.c.id.desc())
        .limit(limit)
    ).mappings()
    return [dict(row) for row in rows]


def balance_points(
    lines: list[tuple[datetime, Decimal]], bucket_s: int = 3600
) -> list[tuple[int, str]]:
    """A running balance thinned to the last value per ``bucket_s`` (for a chart): (ms, amount)."""
    points: dict[int, tuple[int, str]] = {}
    for at, amount in lines:
        epoch_s = int(at.timestamp())
        points[epoch_s // bucket_s] = (epoch_s * 1000, f"{amount:.2f}")
    return list(points.values())


def policy_choices(conn: Connection, organisation_id: int) -> dict[str, list[str]]:
    """Names of the organisation's alarm plans and friendly-hours profiles."""
    found = {}
    for name, table in (("alarm_plans", alarm_plans), ("friendly_profiles", friendly_profiles)):
        found[name] = list(
            conn.execute(
                select(table.c.name)
                .where(table.c.organisation_id == organisation_id)
                .order_by(table.c.name)
            ).scalars()
        )
    return found
