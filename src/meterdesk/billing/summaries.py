"""Deduction summaries (扣费通知 / 用量日报): each tenant hears what the last day or month used
and cost, and what is left.

For each organisation with summaries on (``notification_summaries``) and each time zone its
accounts live in (the site of the account's room, else the organisation's), the latest complete
period (:func:`meterdesk.notifications.summary_periods.latest_complete`) is summarised: one
``deduction_summary`` message per open account that used or was charged anything in it, keyed
``summary:<cadence>:<account>:<period>`` — the outbox's dedupe key makes a restart, a second
process or a manual re-run queue nothing twice. Older periods are never sent. A tenant who asked
for no summaries (``customers.summaries_opt_out``) is left out in the same read of the accounts:
"stop the daily texts" is honoured without a query per account.

Set-based: the accounts are read once per organisation, then handled ``batch_size`` at a time,
each batch in one transaction with a few queries (meters, lines, balances) and one
``enqueue_many_in``; 100,000 accounts are 200 batches, not 100,000 queries. While no
organisation has summaries on, :func:`send_due` is one query of an empty table.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import MutableSet, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, func, select

from meterdesk.billing.model import AccountStatus
from meterdesk.billing.summary_read import standings, uses
from meterdesk.billing.tables import accounts
from meterdesk.db.database import Database
from meterdesk.notifications import summary_settings
from meterdesk.notifications.queueing import NewNotification, enqueue_many_in
from meterdesk.notifications.summary_periods import (
    Cadence,
    Period,
    event_key,
    is_complete,
    latest_complete,
    parse_period,
)
from meterdesk.notifications.tables import notification_outbox
from meterdesk.shared.errors import ValidationError
from meterdesk.shared.time import zone
from meterdesk.sites.tables import buildings, customers, floors, organisations, rooms, sites

log = logging.getLogger(__name__)
EVENT = "deduction_summary"
BATCH_SIZE = 500

#: (organisation, zone, cadence, period key) already summarised by this process: the ``run``
#: step re-checks every few minutes and must not re-read a whole period each time.
Done = MutableSet[tuple[int, str, str, str]]


@dataclass
class SummaryReport:
    periods: list[dict[str, str]] = field(default_factory=list)  # organisation, zone, period
    queued: int = 0  # accounts with a message queued now
    already: int = 0  # accounts whose message was queued before (or no channel takes it)
    skipped: int = 0  # open accounts that used and were charged nothing in the period
    failed: int = 0  # organisations whose summaries failed (``send_due`` only; logged)


def send_due(
    db: Database, *, now: datetime | None = None, done: Done | None = None
) -> SummaryReport:
    """The ``run`` step: every organisation with summaries on, its latest complete periods."""
    now = now or db.clock()
    report = SummaryReport()
    with db.read() as conn:
        on = summary_settings.organisations_on(conn)
    for organisation_id, cadence in sorted(on.items()):
        try:
            _send(db, organisation_id, cadence, None, now, report, done)
        except Exception:
            # one organisation's trouble (a zone gone from the system's database, a batch the
            # database refused) must not keep the others' tenants from theirs; tried again at
            # the next check, and what was queued stays queued once
            report.failed += 1
            log.exception("deduction summaries of organisation %s failed", organisation_id)
    return report


def send(
    db: Database, *, organisation_id: int, period: str | None = None, now: datetime | None = None
) -> SummaryReport:
    """The operators' command: the organisation's latest complete period of its cadence, or
    ``period`` (``2026-12-06`` daily, ``2026-11`` monthly) when given. Refused while the
    organisation has summaries off, and for a period not over yet."""
    now = now or db.clock()
    cadence = summary_settings.cadence_of(db, organisation_id=organisation_id)
    if cadence is Cadence.OFF:
        raise ValidationError("summaries are off for this organisation: turn them on first")
    report = SummaryReport()
    _send(db, organisation_id, cadence, period, now, report, None)
    return report


def _send(
    db: Database,
    organisation_id: int,
    cadence: Cadence,
    asked: str | None,
    now: datetime,
    report: SummaryReport,
    done: Done | None,
) -> None:
    with db.read() as conn:
        zones = _zones(conn, organisation_id)
    periods = {}
    for name in zones:  # every zone checked before anything is queued
        tz = zone(name)
        period = latest_complete(cadence, now, tz) if asked is None else parse_period(asked, tz)
        if not is_complete(period, now):
            raise ValidationError(f"period {period.key}: not over yet in {name}")
        memo = (organisation_id, name, period.cadence.value, period.key)
        if done is None or memo not in done:
            periods[name] = period
    if not periods:  # the run step's usual case: summarised already, nothing more is read
        return
    with db.read() as conn:
        by_zone = _open_accounts(conn, organisation_id)
    for name, period in periods.items():
        account_ids = by_zone.get(name, [])
        for start in range(0, len(account_ids), BATCH_SIZE):
            with db.transaction() as conn:
                batch = account_ids[start : start + BATCH_SIZE]
                _batch(conn, organisation_id, batch, period, now, report)
        if account_ids:
            report.periods.append(
                {"organisation_id": str(organisation_id), "zone": name, "period": period.key}
            )
        if done is not None:
            done.add((organisation_id, name, period.cadence.value, period.key))


def _zones(conn: Connection, organisation_id: int) -> list[str]:
    """The time zones the organisation's accounts can live in: its sites' and its own (for an
    account without a room). Two small reads, whatever the number of accounts."""
    own = conn.execute(
        select(organisations.c.timezone).where(organisations.c.id == organisation_id)
    ).scalar_one()
    found = conn.execute(
        select(sites.c.timezone).where(sites.c.organisation_id == organisation_id).distinct()
    ).scalars()
    return sorted({str(own), *(str(name) for name in found)})


def _open_accounts(conn: Connection, organisation_id: int) -> dict[str, list[int]]:
    """The organisation's open accounts by the zone they live in, in id order; the accounts of
    customers who asked for no summaries are not among them."""
    where = func.coalesce(sites.c.timezone, organisations.c.timezone)
    rows = conn.execute(
        select(accounts.c.id, where)
        .join(organisations, organisations.c.id == accounts.c.organisation_id)
        .join(customers, customers.c.id == accounts.c.customer_id)
        .outerjoin(rooms, rooms.c.id == accounts.c.room_id)
        .outerjoin(floors, floors.c.id == rooms.c.floor_id)
        .outerjoin(buildings, buildings.c.id == floors.c.building_id)
        .outerjoin(sites, sites.c.id == buildings.c.site_id)
        .where(
            accounts.c.organisation_id == organisation_id,
            accounts.c.status == AccountStatus.OPEN.value,
            customers.c.summaries_opt_out.is_(False),
        )
        .order_by(accounts.c.id)
    ).all()
    found: dict[str, list[int]] = defaultdict(list)
    for account_id, name in rows:
        found[str(name)].append(int(account_id))
    return found


def _batch(
    conn: Connection,
    organisation_id: int,
    account_ids: Sequence[int],
    period: Period,
    now: datetime,
    report: SummaryReport,
) -> None:
    used = uses(conn, list(account_ids), period)
    report.skipped += len(account_ids) - len(used)
    if not used:
        return
    held = standings(conn, used)
    messages = [
        NewNotification(
            organisation_id=organisation_id,
            event=EVENT,
            key=event_key(period, account_id),
            params={**_period_params(period), **use.params(), **held[account_id]},
            account_id=account_id,
        )
        for account_id, use in sorted(used.items())
    ]
    written = enqueue_many_in(conn, messages, now)
    fresh = _keys_of(conn, written)
    report.queued += len(fresh)
    report.already += len(messages) - len(fresh)


def _period_params(period: Period) -> dict[str, str]:
    day = period.first_day
    found = {
        "period": period.key,
        "cadence": period.cadence.value,
        "year": str(day.year),
        "month": str(day.month),
    }
    if period.cadence is Cadence.DAILY:
        found["day"] = str(day.day)
    return found


def _keys_of(conn: Connection, ids: list[int]) -> set[str]:
    """The event keys of the outbox rows just written (an account on two channels is two rows
    and one message)."""
    if not ids:
        return set()
    table = notification_outbox
    return set(conn.execute(select(table.c.event_key).where(table.c.id.in_(ids))).scalars())
