"""Where the control loop's decisions leave: the :class:`Outbox` port and what a decision becomes
on it. An alarm is a message to the tenant on its level's channels, urgent when the level is the
plan's last (the warning a cut follows must not wait out quiet hours); a cut, a restore or a change
of protect (保电) is a device command for each of the account's remotely switchable meters (relay
for electricity, valve for water), and a cut or a restore is also a message when the account has
such a meter. Every key carries the account's new state version, so a decision can never leave
twice. The messages of a batch leave together, and so do its commands.

A quantity account's (购量) situation holds quantity left in hundredths, not fen, and its alarm
amounts are quantities: its messages carry ``quantity_left`` / ``quantity_threshold`` with their
``unit`` instead of a money ``balance``, so a tenant reads "剩余水量 3.00 m³", never "余额 3.00 元".
:class:`~meterdesk.billing.outbox.DatabaseOutbox` writes both as rows in the caller's
transaction; :class:`RecordingOutbox` only remembers them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, select

from meterdesk.billing.control_state import ControlledAccount
from meterdesk.billing.policy import Action, Decision, RestoreMode, Situation
from meterdesk.billing.quantity import UNITS
from meterdesk.billing.quantity_model import CreditUnit, hundredths_text
from meterdesk.billing.tables import accounts, meter_assignments
from meterdesk.metering.tables import meters
from meterdesk.notifications.model import Urgency
from meterdesk.shared.money import format_money, from_fen
from meterdesk.tariffs.model import Utility

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


@dataclass(frozen=True)
class MessageRequest:
    """A message to an account's tenant (and the operators' webhook/log), keyed by the decision
    or the desk operation that causes it."""

    organisation_id: int
    account_id: int
    event: str
    key: str
    params: dict[str, Any]
    channels: tuple[str, ...] | None
    urgency: Urgency | None = None  # at least this urgent; None: the event's own urgency


class Outbox(Protocol):
    """Where decisions leave: every call writes rows in the caller's transaction."""

    def send_commands(self, conn: Connection, requests: Sequence[CommandRequest]) -> None: ...

    def send_messages(self, conn: Connection, requests: Sequence[MessageRequest]) -> None: ...

    def message(  # one message, for the desk (a recharge, a refund, emergency credit)
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

    def send_messages(self, conn: Connection, requests: Sequence[MessageRequest]) -> None:
        self.messages.extend(asdict(request) for request in requests)

    def message(self, conn: Connection, **fields: Any) -> None:
        self.messages.append(fields)


def send_decisions(
    conn: Connection,
    deciding: list[tuple[ControlledAccount, list[Decision], Situation]],
    outbox: Outbox,
) -> None:
    """The messages of every account together, then their device commands, each in order."""
    controllable = _controllable_meters(
        conn,
        [account.account_id for account, decisions, _ in deciding
         if any(decision.action is not Action.ALARM for decision in decisions)],
    )  # fmt: skip
    units = _quantity_units(conn, [account.account_id for account, _, _ in deciding])
    wanted: list[CommandRequest] = []
    messages: list[MessageRequest] = []
    for account, decisions, now in deciding:
        version = account.version + 1  # as control_state.save_states stored it
        meters_of = controllable.get(account.account_id, [])
        unit = units.get(account.account_id)
        for decision in decisions:
            key = f"control:{account.account_id}:{version}:{decision.action.value}"
            params = {**_held(now.balance_fen, unit), "at": now.at.isoformat()}
            if decision.action is Action.ALARM:
                messages.append(_alarm_message(account, decision, key, params, now, unit))
                continue
            wanted.extend(_device_commands(account, decision, key, meters_of))
            if decision.action in EVENT_FOR and meters_of:
                messages.append(
                    MessageRequest(
                        organisation_id=account.organisation_id,
                        account_id=account.account_id,
                        event=EVENT_FOR[decision.action],
                        key=key,
                        params=params,
                        channels=None,
                    )
                )
    if messages:
        outbox.send_messages(conn, messages)
    if wanted:
        outbox.send_commands(conn, wanted)


def _alarm_message(
    account: ControlledAccount,
    decision: Decision,
    key: str,
    params: dict[str, Any],
    now: Situation,
    unit: str | None,
) -> MessageRequest:
    level = next(level for level in account.policy.alarms if level.level == decision.level)
    # The plan's deepest level is its last warning before the cut, whatever its number: in a
    # plan of levels 1 and 2, level 2 is what level 3 is in a full plan, and must not wait for
    # the end of quiet hours while the cut comes next. Other levels keep their event's urgency.
    last = max(found.level for found in account.policy.alarms)
    return MessageRequest(
        organisation_id=account.organisation_id,
        account_id=account.account_id,
        event=f"alarm_level_{decision.level}",
        key=f"{key}:{decision.level}:{decision.repeat}",
        params={
            **params,
            "level": decision.level,
            "repeat": decision.repeat,
            **_threshold(level.threshold_fen, unit),
            "days_left": now.days_left,
        },
        channels=level.channels,
        urgency=Urgency.URGENT if decision.level == last else None,
    )


def _held(balance: int, unit: str | None) -> dict[str, Any]:
    """What the account holds: money (fen), or for a quantity account hundredths of its unit."""
    if unit is None:
        return {"balance": format_money(from_fen(balance))}
    return {"quantity_left": hundredths_text(balance), "unit": unit}


def _threshold(threshold: int | None, unit: str | None) -> dict[str, Any]:
    if threshold is None:
        return {"threshold": None}
    if unit is None:
        return {"threshold": format_money(from_fen(threshold))}
    return {"quantity_threshold": hundredths_text(threshold)}


def _device_commands(
    account: ControlledAccount, decision: Decision, key: str, controllable: list[tuple[int, str]]
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


# Built once: building a statement and its cache key cost more than running it (every batch
# that cuts or restores reads it).
_CONTROLLABLE = (
    select(meter_assignments.c.account_id, meters.c.id, meters.c.utility)
    .join(meter_assignments, meter_assignments.c.meter_id == meters.c.id)
    .where(
        meter_assignments.c.account_id.in_(bindparam("accounts", expanding=True)),
        meter_assignments.c.end_at.is_(None),
        meters.c.protocol != "manual",
    )
    .order_by(meter_assignments.c.account_id, meters.c.id)
)


# Quantity accounts among those deciding, with their meter's utility (a quantity account holds
# exactly one meter): one query per batch that decides anything, none per account.
_QUANTITY_UNITS = (
    select(accounts.c.id, meters.c.utility)
    .join(meter_assignments, meter_assignments.c.account_id == accounts.c.id)
    .join(meters, meters.c.id == meter_assignments.c.meter_id)
    .where(
        accounts.c.id.in_(bindparam("accounts", expanding=True)),
        accounts.c.credit_unit == CreditUnit.QUANTITY.value,
        meter_assignments.c.end_at.is_(None),
    )
)


def _quantity_units(conn: Connection, account_ids: list[int]) -> dict[int, str]:
    """Per quantity account, its unit (kWh or m³); money accounts are absent."""
    if not account_ids:
        return {}
    rows = conn.execute(_QUANTITY_UNITS, {"accounts": sorted(set(account_ids))}).all()
    return {int(row.id): UNITS[Utility(row.utility)] for row in rows}


def _controllable_meters(
    conn: Connection, account_ids: list[int]
) -> dict[int, list[tuple[int, str]]]:
    """Per account, its meters that can be switched remotely (manual meters have no device)."""
    if not account_ids:
        return {}
    rows = conn.execute(_CONTROLLABLE, {"accounts": sorted(set(account_ids))}).all()
    found: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for row in rows:
        found[int(row.account_id)].append((int(row.id), str(row.utility)))
    return found
