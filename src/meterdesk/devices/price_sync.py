"""Meter billing keeps the tariff's prices on the meter (F-TAR-PUSH, without anyone remembering).

A meter that bills itself (表端计费) deducts by its own four-price table. When its account's
tariff changes, or a new version of that tariff comes into force, the meter goes on at the old
prices until someone writes the new ones — and until then the meter and the platform's
reconciliation disagree every day. This check runs in ``meterdesk run`` (every
``meter_billing_check_s``, an hour by default) and as ``meterdesk command sync-prices``:

- it looks at every electricity meter that bills itself, is in an open account and is linked to
  a DL/T 645 or Modbus line (MQTT gateways and CJ/T 188 water meters cannot take a price table);
- the wanted table is the one of the account's tariff version in force today in the site's zone
  (:func:`meterdesk.devices.reconcile.table_in_force`); a tariff the table cannot hold (tiers, a
  deep-valley price) is counted as ``not_writable`` and left to the operator;
- when the meter's newest price write that is confirmed or still on its way already carries that
  table, nothing is done; otherwise a ``write_prices`` command is queued, confirmed by the
  executor like any other.

Its idempotency key names the meter, its device (a replacement starts with the factory table),
the local day and the table, so a second run the same day (another process, a restart) replays
instead of sending again, and a write that failed is tried again the next day, not every hour.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Connection, func, or_, select

from meterdesk.billing.model import AccountStatus, BillingMode
from meterdesk.billing.tables import accounts, meter_assignments
from meterdesk.db.database import Database
from meterdesk.devices.commands import repository, service
from meterdesk.devices.commands.model import OPEN_STATUSES, CommandKind, CommandStatus
from meterdesk.devices.reconcile import table_in_force
from meterdesk.devices.tables import commands
from meterdesk.metering.tables import meter_replacements, meters
from meterdesk.shared.chunks import chunks
from meterdesk.shared.errors import MeterdeskError
from meterdesk.shared.time import local_date, zone
from meterdesk.sites.tables import sites
from meterdesk.tariffs.model import Tariff
from meterdesk.tariffs.repository import load_tariff

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
    """Queue a price write for every meter-billing meter whose table is not today's tariff's.

    Everything is read first, without the writer's lock (each tariff loaded once); only the
    meters that need a write are written, a chunk per transaction. A write queued by someone
    else in between has the same key, so it is replayed, not repeated."""
    at = db.clock()
    report = PriceSyncReport()
    due: list[tuple[_Candidate, dict[str, Decimal]]] = []
    with db.read() as conn:
        candidates = _candidates(conn, organisation_id)
        tables = _Tables(conn, at)
        for chunk in chunks(candidates, 500):
            holding = _newest_holding_tables(conn, [c.meter_id for c in chunk])
            for candidate in chunk:
                report.checked += 1
                try:
                    wanted = tables.wanted(candidate.tariff_id, candidate.timezone)
                except MeterdeskError as why:  # tiers or deep valley: the table cannot hold them
                    report.not_writable.append((candidate.number, str(why)))
                    continue
                if holding.get(candidate.meter_id) == wanted:
                    report.in_step += 1
                else:
                    due.append((candidate, wanted))
    for part in chunks(due, 200):
        with db.transaction() as conn:
            for candidate, wanted in part:
                _write(conn, candidate, wanted, tables.today(candidate.timezone), at, report)
    return report


@dataclass(frozen=True)
class _Candidate:
    organisation_id: int
    meter_id: int
    number: str
    tariff_id: int
    timezone: str
    generation: int  # the device: 0, then one more for each replacement


class _Tables:
    """The table of each tariff in force today in each zone, each tariff loaded once."""

    def __init__(self, conn: Connection, at: datetime) -> None:
        self.conn, self.at = conn, at
        self.tariffs: dict[int, Tariff] = {}
        self.found: dict[tuple[int, str], dict[str, Decimal] | MeterdeskError] = {}

    def today(self, timezone: str) -> date:
        return local_date(self.at, zone(timezone))

    def wanted(self, tariff_id: int, timezone: str) -> dict[str, Decimal]:
        key = (tariff_id, timezone)
        if key not in self.found:
            if tariff_id not in self.tariffs:
                self.tariffs[tariff_id] = load_tariff(self.conn, tariff_id)
            try:
                self.found[key] = table_in_force(self.tariffs[tariff_id], self.today(timezone))
            except MeterdeskError as why:
                self.found[key] = why
        found = self.found[key]
        if isinstance(found, MeterdeskError):
            raise found
        return found


def _candidates(conn: Connection, organisation_id: int | None) -> list[_Candidate]:
    generation = (
        select(func.coalesce(func.max(meter_replacements.c.generation_after), 0))
        .where(meter_replacements.c.meter_id == meters.c.id)
        .scalar_subquery()
    )
    query = (
        select(
            meters.c.organisation_id,
            meters.c.id,
            meters.c.number,
            meter_assignments.c.tariff_id,
            sites.c.timezone,
            generation,
        )
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
    return [
        _Candidate(int(o), int(m), str(n), int(t), str(tz), int(g))
        for o, m, n, t, tz, g in conn.execute(query)
    ]


def _newest_holding_tables(conn: Connection, meter_ids: list[int]) -> dict[int, dict[str, Decimal]]:
    """Each meter's newest price write that is confirmed on its current device or on its way:
    the table it carries. A write confirmed before the meter's last replacement went to the
    device it replaced (the new one starts with its factory table)."""
    replaced = (
        select(func.max(meter_replacements.c.replaced_at))
        .where(meter_replacements.c.meter_id == commands.c.meter_id)
        .scalar_subquery()
    )
    newest = (
        select(func.max(commands.c.id))
        .where(
            commands.c.meter_id.in_(meter_ids),
            commands.c.kind == CommandKind.WRITE_PRICES.value,
            commands.c.status.in_(HOLDING),
            or_(
                replaced.is_(None),
                commands.c.status.in_(OPEN_STATUSES),
                commands.c.finished_at > replaced,
            ),
        )
        .group_by(commands.c.meter_id)
    )
    rows = conn.execute(select(commands).where(commands.c.id.in_(newest))).mappings()
    found = (repository.command_from_row(row) for row in rows)
    return {command.meter_id: dict(command.spec.prices or {}) for command in found}


def _write(
    conn: Connection,
    candidate: _Candidate,
    wanted: dict[str, Decimal],
    today: date,
    at: datetime,
    report: PriceSyncReport,
) -> None:
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
        # a new device (replacement) the same day gets its own write
        idempotency_key=(
            f"prices:{candidate.meter_id}:{candidate.generation}:{today.isoformat()}:{digest}"
        ),
        context={"reason": "tariff_prices"},
    )
    if not sent.replayed:
        report.queued.append((candidate.number, sent.command.id))
    else:  # today's write of this table failed or was cancelled: tomorrow's key tries again
        report.failed_today.append((candidate.number, sent.command.id))
