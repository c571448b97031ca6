"""Changing the tariff of a meter in an open account (改电价, F-MON-CTRL "set price / tariff").

A meter is billed by the tariff of the assignment that covers a whole consumption interval (see
``ingest._covering``). The switch therefore happens at an instant that is a reading: the meter's
latest accepted reading (its cursor) when the change is made, or the opening reading when there
is none since. The current assignment ends there and a new one with the new tariff starts there,
so no interval straddles the switch, nothing is left unbilled and nothing is billed twice:

- every interval up to the switch was priced by the old tariff and stays so (the past is never
  re-priced); a reading that arrives late with a time before the switch falls inside the old
  assignment and is priced by the old tariff;
- every interval after it is priced by the new tariff.

The account stays the same, so the running totals per (meter, account, month) carry on across
the switch: running-total rounding stays exact to the fen for the month, and a tiered tariff
counts the month's whole use by this account — also what was used under the old tariff — when it
decides in which block the next kWh falls.

The ingest pipeline caches assignments until the configuration counter moves, so the change
bumps it in its own transaction. On PostgreSQL the meter's cursor row is locked first (as ingest
does), so a batch of the same meter either commits before the change (and the switch is at its
last reading) or runs after it and sees the new assignment.

Changing to the tariff the meter already has changes nothing and says so. An idempotency key
makes a repeated request answer the first result; the key on a different request is a conflict.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from meterdesk.audit import service as audit
from meterdesk.billing import quantity
from meterdesk.billing.model import AccountStatus, BillingMode
from meterdesk.billing.quantity_model import check_tariff
from meterdesk.billing.tables import accounts, meter_assignments, tariff_changes
from meterdesk.db import counters
from meterdesk.db.database import Database
from meterdesk.metering import repository as metering_repository
from meterdesk.metering.tables import meters, readings
from meterdesk.shared.errors import (
    ConflictError,
    IdempotencyConflictError,
    NotFoundError,
    ValidationError,
)
from meterdesk.tariffs.repository import load_tariff
from meterdesk.tariffs.tables import tariffs


@dataclass(frozen=True)
class SwitchPoint:
    """A meter of an open account, its tariff now, and from when a new one would apply."""

    account_id: int
    account_number: str
    billing_mode: str
    meter_id: int
    meter_number: str
    utility: str
    tariff_id: int
    tariff: str
    tariff_since: datetime
    assignment_id: int
    effective_at: datetime


@dataclass(frozen=True)
class TariffChanged:
    change_id: int | None  # None: nothing changed (the meter already had that tariff)
    account_id: int
    account_number: str
    meter_id: int
    meter_number: str
    previous_tariff_id: int
    previous_tariff: str
    tariff_id: int
    tariff: str
    effective_at: datetime
    changed: bool
    replayed: bool
    message: str


def switch_point(
    conn: Connection, *, organisation_id: int, account_id: int, meter_id: int
) -> SwitchPoint:
    """Where a change made now would take effect; refuses what cannot change (clear errors)."""
    account = (
        conn.execute(
            select(accounts.c.number, accounts.c.status, accounts.c.billing_mode).where(
                accounts.c.id == account_id, accounts.c.organisation_id == organisation_id
            )
        )
        .mappings()
        .first()
    )
    if account is None:
        raise NotFoundError(f"account {account_id} not found")
    if account["status"] != AccountStatus.OPEN.value:
        raise ConflictError(f"account {account['number']} is closed: its tariffs cannot change")
    meter = _meter(conn, organisation_id, meter_id)
    current = _current_assignment(conn, meter_id)
    if current is None or int(current["account_id"]) != account_id:
        raise NotFoundError(
            f"meter {meter['number']} is not a meter of account {account['number']}"
        )
    # The latest accepted reading is the cursor's (read without a row lock: reads must not hold
    # up ingest; change_tariff locks the cursor before it calls this).
    latest = conn.execute(
        select(func.max(readings.c.measured_at)).where(readings.c.meter_id == meter_id)
    ).scalar_one_or_none()
    since: datetime = current["start_at"]
    # The latest reading never lies before the assignment's start (the opening reading, or the
    # baseline, is the cursor when the account opens); max() keeps the switch inside the account.
    effective = since if latest is None else max(since, latest)
    return SwitchPoint(
        account_id=account_id,
        account_number=str(account["number"]),
        billing_mode=str(account["billing_mode"]),
        meter_id=meter_id,
        meter_number=str(meter["number"]),
        utility=str(meter["utility"]),
        tariff_id=int(current["tariff_id"]),
        tariff=str(current["tariff"]),
        tariff_since=since,
        assignment_id=int(current["id"]),
        effective_at=effective,
    )


def _meter(conn: Connection, organisation_id: int, meter_id: int) -> Any:
    found = (
        conn.execute(
            select(meters.c.number, meters.c.utility).where(
                meters.c.id == meter_id, meters.c.organisation_id == organisation_id
            )
        )
        .mappings()
        .first()
    )
    if found is None:
        raise NotFoundError(f"meter {meter_id} not found")
    return found


def _current_assignment(conn: Connection, meter_id: int) -> Any:
    return (
        conn.execute(
            select(
                meter_assignments.c.id,
                meter_assignments.c.account_id,
                meter_assignments.c.tariff_id,
                meter_assignments.c.start_at,
                tariffs.c.name.label("tariff"),
            )
            .join(tariffs, tariffs.c.id == meter_assignments.c.tariff_id)
            .where(meter_assignments.c.meter_id == meter_id, meter_assignments.c.end_at.is_(None))
        )
        .mappings()
        .first()
    )


def change_tariff(
    db: Database,
    *,
    organisation_id: int,
    account_id: int,
    meter_id: int,
    tariff_id: int,
    actor: str,
    idempotency_key: str,
) -> TariffChanged:
    """Bill ``meter_id`` of the open account by ``tariff_id`` from its latest accepted reading."""
    if not idempotency_key.strip():
        raise ValidationError("idempotency_key: must not be empty")
    with db.transaction() as conn:
        _meter(conn, organisation_id, meter_id)
        # Lock the meter's cursor (PostgreSQL) before anything is read: ingest of this meter
        # waits for the change, and a twin request with the same key sees this one's row.
        metering_repository.load_cursors(conn, [meter_id])
        stored = _stored(conn, organisation_id, idempotency_key)
        if stored is not None:
            return _replay(conn, stored, account_id, meter_id, tariff_id, idempotency_key)
        point = switch_point(
            conn, organisation_id=organisation_id, account_id=account_id, meter_id=meter_id
        )
        tariff = _tariff(conn, organisation_id, tariff_id, point)
        if quantity.is_quantity(conn, account_id):  # 购量 buys along a flat or tiered price
            check_tariff(load_tariff(conn, tariff_id))
        if tariff_id == point.tariff_id:
            return _unchanged(point)
        at = db.clock()
        change_id = _switch(
            conn,
            point,
            organisation_id=organisation_id,
            tariff_id=tariff_id,
            actor=actor,
            key=idempotency_key,
            at=at,
        )
        counters.bump(conn)  # the ingest pipeline caches assignments
        _audit(conn, organisation_id, point, tariff, actor, idempotency_key, at)
        return _changed(point, change_id, tariff_id, tariff)


def _audit(
    conn: Connection,
    organisation_id: int,
    point: SwitchPoint,
    tariff: str,
    actor: str,
    key: str,
    at: datetime,
) -> None:
    audit.record(
        conn,
        organisation_id=organisation_id,
        actor=actor,
        action="account.tariff_change",
        subject=f"account:{point.account_number}",
        at=at,
        detail={
            "meter": point.meter_number,
            "from": point.tariff,
            "to": tariff,
            "effective_at": point.effective_at.isoformat(),
            "idempotency_key": key,
        },
    )


def _tariff(conn: Connection, organisation_id: int, tariff_id: int, point: SwitchPoint) -> str:
    found = conn.execute(
        select(tariffs.c.name, tariffs.c.utility).where(
            tariffs.c.id == tariff_id, tariffs.c.organisation_id == organisation_id
        )
    ).first()
    if found is None:
        raise NotFoundError(f"tariff {tariff_id} not found")
    if found.utility != point.utility:
        raise ValidationError(
            f"meter {point.meter_number} measures {point.utility} but the tariff {found.name!r} "
            f"prices {found.utility}"
        )
    return str(found.name)


def _switch(
    conn: Connection,
    point: SwitchPoint,
    *,
    organisation_id: int,
    tariff_id: int,
    actor: str,
    key: str,
    at: datetime,
) -> int:
    """End the current assignment at the switch, start the new one there, keep the change."""
    conn.execute(
        update(meter_assignments)
        .where(meter_assignments.c.id == point.assignment_id)
        .values(end_at=point.effective_at)
    )
    conn.execute(
        insert(meter_assignments).values(
            meter_id=point.meter_id,
            account_id=point.account_id,
            tariff_id=tariff_id,
            start_at=point.effective_at,
            end_at=None,
        )
    )
    try:
        result = conn.execute(
            insert(tariff_changes).values(
                organisation_id=organisation_id,
                idempotency_key=key,
                account_id=point.account_id,
                meter_id=point.meter_id,
                from_tariff_id=point.tariff_id,
                to_tariff_id=tariff_id,
                effective_at=point.effective_at,
                changed_at=at,
                changed_by=actor,
            )
        )
    except IntegrityError:  # a concurrent request for another meter took the key first
        raise IdempotencyConflictError(
            f"idempotency key {key!r} was already used for a different request"
        ) from None
    inserted = result.inserted_primary_key
    assert inserted is not None
    return int(inserted[0])


def _stored(conn: Connection, organisation_id: int, key: str) -> Any:
    return (
        conn.execute(
            select(tariff_changes).where(
                tariff_changes.c.organisation_id == organisation_id,
                tariff_changes.c.idempotency_key == key,
            )
        )
        .mappings()
        .first()
    )


def _replay(
    conn: Connection, stored: Any, account_id: int, meter_id: int, tariff_id: int, key: str
) -> TariffChanged:
    """The first answer again, for the same request; a conflict for a different one."""
    if (stored["account_id"], stored["meter_id"], stored["to_tariff_id"]) != (
        account_id,
        meter_id,
        tariff_id,
    ):
        raise IdempotencyConflictError(
            f"idempotency key {key!r} was already used for a different request"
        )
    old, new = tariffs.alias("old"), tariffs.alias("new")
    names = conn.execute(
        select(accounts.c.number, meters.c.number, old.c.name, new.c.name)
        .select_from(accounts)
        .join(meters, meters.c.id == stored["meter_id"])
        .join(old, old.c.id == stored["from_tariff_id"])
        .join(new, new.c.id == stored["to_tariff_id"])
        .where(accounts.c.id == stored["account_id"])
    ).one()
    answer = TariffChanged(
        change_id=int(stored["id"]),
        account_id=account_id,
        account_number=str(names[0]),
        meter_id=meter_id,
        meter_number=str(names[1]),
        previous_tariff_id=int(stored["from_tariff_id"]),
        previous_tariff=str(names[2]),
        tariff_id=tariff_id,
        tariff=str(names[3]),
        effective_at=stored["effective_at"],
        changed=True,
        replayed=True,
        message="",
    )
    return replace(answer, message=_message(answer))


def _unchanged(point: SwitchPoint) -> TariffChanged:
    return TariffChanged(
        change_id=None,
        account_id=point.account_id,
        account_number=point.account_number,
        meter_id=point.meter_id,
        meter_number=point.meter_number,
        previous_tariff_id=point.tariff_id,
        previous_tariff=point.tariff,
        tariff_id=point.tariff_id,
        tariff=point.tariff,
        effective_at=point.tariff_since,
        changed=False,
        replayed=False,
        message=f"meter {point.meter_number} is already billed by {point.tariff!r}; nothing changed",
    )


def _changed(point: SwitchPoint, change_id: int, tariff_id: int, tariff: str) -> TariffChanged:
    answer = TariffChanged(
        change_id=change_id,
        account_id=point.account_id,
        account_number=point.account_number,
        meter_id=point.meter_id,
        meter_number=point.meter_number,
        previous_tariff_id=point.tariff_id,
        previous_tariff=point.tariff,
        tariff_id=tariff_id,
        tariff=tariff,
        effective_at=point.effective_at,
        changed=True,
        replayed=False,
        message="",
    )
    message = _message(answer)
    if point.billing_mode == BillingMode.METER.value:
        message += (
            "; the meter bills itself: meterdesk run writes the new prices to it within the "
            "hour (now: meterdesk command sync-prices)"
        )
    return replace(answer, message=message)


def _message(answer: TariffChanged) -> str:
    return (
        f"meter {answer.meter_number} of account {answer.account_number}: {answer.tariff!r} "
        f"instead of {answer.previous_tariff!r} from its reading at "
        f"{answer.effective_at.isoformat()}"
    )
