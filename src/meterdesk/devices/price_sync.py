"""Meter billing keeps the tariff's prices on the meter (F-TAR-PUSH, without anyone remembering).

A meter that bills itself (表端计费) deducts by its own four-price table. When its account's
tariff changes, or a new version of that tariff comes into force, the meter goes on at the old
prices until someone writes the new ones — and until then the meter and the platform's
reconciliation disagree every day. This check runs in ``meterdesk run`` (every
``price_sync_interval_s``, an hour by default) and as ``meterdesk command sync-prices``:

- it looks at every electricity meter that bills itself, is in an open account and is linked to
  a DL/T 645 or Modbus line (MQTT gateways and CJ/T 188 water meters cannot take a price table);
- the wanted table is the one of the account's tariff version in force today in the site's zone
  (:func:`meterdesk.devices.reconcile.tariff_prices`); a tariff the table cannot hold (tiers, a
  deep-valley price) is counted as ``not_writable`` and left to the operator;
- when the meter's newest price write that is confirmed or still on its way already carries that
  table, nothing is done; otherwise a ``write_prices`` command is queued, confirmed by the
  executor like any other.

Its idempotency key names the meter, the local day and the table, so a second run the same day
(another process, a restart) replays instead of sending again, and a write that failed is tried
again the next day, not every hour.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, func, select

from meterdesk.billing.model import AccountStatus, BillingMode
from meterdesk.billing.tables import accounts, meter_assignments
from meterdesk.db.database import Database
from meterdesk.devices.commands import repository, service
from meterdesk.devices.commands.model import OPEN_STATUSES, CommandKind, CommandStatus
from meterdesk.devices.reconcile import tariff_prices
from meterdesk.devices.tables import commands
from meterdesk.metering.tables import meters
from meterdesk.shared.chunks import chunks
from meterdesk.shared.errors import MeterdeskError
from meterdesk.shared.time import local_date, zone
from meterdesk.sites.tables import sites

ACTOR = "system:prices"
WRITABLE_PROTOCOLS = ("dlt645", "modbus_tcp", "modbus_rtu")
HOLDING = (*OPEN_STATUSES, CommandStatus.CONFIRMED.value)  # a write the meter has or will have


@dataclass
class PriceSyncReport:
    checked: int = 0  # meters that bill themselves and can take a price table
    in_step: int = 0  # their newest write (confirmed or on its way) has today's table
    queued: list[tuple[str, int]] = field(default_factory=list)  # (meter number, command id)
    not_writable: list[tuple[str, str]] = field(default_factory=list)  # (meter number, why)
    failed_today: list[tuple[str, int]] = field(default_factory=list)  # tried again tomorrow


def sync_prices(db: Database, *, organisation_id: int | None = None) -> PriceSyncReport:
    """Queue a price write for every meter-billing meter whose table is not today's tariff's."""
    at = db.clock()
    report = PriceSyncReport()
    with db.read() as conn:
        candidates = _candidates(conn, organisation_id)
    for chunk in chunks(candidates, 500):
        with db.transaction() as conn:
            holding = _newest_holding_tables(conn, [c.meter_id for c in chunk])
            for candidate in chunk:
                _sync_one(conn, candidate, holding.get(candidate.meter_id), at, report)
    return report


@dataclass(frozen=True)
class _Candidate:
    organisation_id: int
    meter_id: int
    number: str
    timezone: str


def _candidates(conn: Connection, organisation_id: int | None) -> list[_Candidate]:
    query = (
        select(meters.c.organisation_id, meters.c.id, meters.c.number, sites.c.timezone)
        .join(meter_assignments, meter_assignments.c.meter_id == meters.c.id)
        .join(accounts, accounts.c.id == meter_assignments.c.account_id)
        .join(sites, sites.c.id == meters.c.site_id)
        .where(
            meter_assignments.c.end_at.is_(None),
            accounts.c.status == AccountStatus.OPEN.value,
            accounts.c.billing_mode == BillingMode.METER.value,
            meters.c.utility == "electricity",
            meters.c.bus_id.is_not(None),
            meters.c.protocol.in_(WRITABLE_PROTOCOLS),
        )
        .order_by(meters.c.id)
    )
    if organisation_id is not None:
        query = query.where(meters.c.organisation_id == organisation_id)
    return [_Candidate(int(o), int(m), str(n), str(tz)) for o, m, n, tz in conn.execute(query)]


def _newest_holding_tables(conn: Connection, meter_ids: list[int]) -> dict[int, dict[str, Decimal]]:
    """Each meter's newest price write that is confirmed or on its way: the table it carries."""
    newest = (
        select(func.max(commands.c.id))
        .where(
            commands.c.meter_id.in_(meter_ids),
            commands.c.kind == CommandKind.WRITE_PRICES.value,
            commands.c.status.in_(HOLDING),
        )
        .group_by(commands.c.meter_id)
    )
    rows = conn.execute(select(commands).where(commands.c.id.in_(newest))).mappings()
    found = (repository.command_from_row(row) for row in rows)
    return {command.meter_id: dict(command.spec.prices or {}) for command in found}


def _sync_one(
    conn: Connection,
    candidate: _Candidate,
    holding: dict[str, Decimal] | None,
    at: datetime,
    report: PriceSyncReport,
) -> None:
    report.checked += 1
    try:
        wanted = tariff_prices(
            conn, organisation_id=candidate.organisation_id, meter_id=candidate.meter_id, at=at
        )
    except MeterdeskError as why:  # tiers or deep valley: the meter's table cannot hold them
        report.not_writable.append((candidate.number, str(why)))
        return
    if holding == wanted:
        report.in_step += 1
        return
    today = local_date(at, zone(candidate.timezone))
    table = ",".join(f"{slot}={price}" for slot, price in sorted(wanted.items()))
    digest = hashlib.sha256(table.encode()).hexdigest()[:16]
    sent = service.send_command_in(
        conn,
        organisation_id=candidate.organisation_id,
        meter_id=candidate.meter_id,
        kind=CommandKind.WRITE_PRICES.value,
        params={"prices": {slot: str(price) for slot, price in wanted.items()}},
        actor=ACTOR,
        at=at,
        idempotency_key=f"prices:{candidate.meter_id}:{today.isoformat()}:{digest}",
        context={"reason": "tariff_prices"},
    )
    if not sent.replayed:
        report.queued.append((candidate.number, sent.command.id))
    else:  # today's write of this table failed or was cancelled: tomorrow's key tries again
        report.failed_today.append((candidate.number, sent.command.id))
