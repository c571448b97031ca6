"""Meter billing: the operators hear when a meter's money or purchases differ from the ledger's.

A meter that bills itself (表端计费) is authoritative for its own money; the platform mirrors
what each read shows and :func:`meterdesk.devices.reconcile.reconcile` compares it with what the
ledger expects. That comparison used to be a report somebody had to run. ``meterdesk run`` now
runs it every ``meter_billing_check_s`` (an hour) for every organisation with meter-billing
accounts and queues ``meter_money_differs`` to the operators for each meter that differs beyond
the tolerance (money) or in its purchase count — a top-up that reached the meter some other
way, a push that landed although it failed, a meter reset or swapped, a price table that is not
the tariff's.

At most one message per meter per day (UTC) while it differs: the key names the meter and the
day, so the hourly runs and a restart add nothing, and a difference nobody has settled is
brought up again the next day. Accounts whose meters share one balance and meters never read
are not compared (the report says why) and so not announced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from meterdesk.billing.model import AccountStatus, BillingMode
from meterdesk.billing.tables import accounts
from meterdesk.db.database import Database
from meterdesk.devices.reconcile import DEFAULT_TOLERANCE, ReconciliationRow, reconcile
from meterdesk.metering.tables import meters
from meterdesk.notifications.queueing import NewNotification, enqueue_many_in

EVENT = "meter_money_differs"


@dataclass
class MoneyWatchReport:
    compared: int = 0  # meter-billing meters compared
    differing: list[tuple[str, str]] = field(default_factory=list)  # (meter number, verdict)


def report_differences(db: Database, *, at: datetime | None = None) -> MoneyWatchReport:
    """Compare every organisation's meter-billing meters and queue a message per difference."""
    at = at or db.clock()
    with db.read() as conn:
        organisations = [
            int(o)
            for o in conn.execute(
                select(accounts.c.organisation_id)
                .where(
                    accounts.c.billing_mode == BillingMode.METER.value,
                    accounts.c.status == AccountStatus.OPEN.value,
                )
                .distinct()
                .order_by(accounts.c.organisation_id)
            ).scalars()
        ]
    report = MoneyWatchReport()
    for organisation_id in organisations:
        rows = reconcile(db, organisation_id, tolerance=DEFAULT_TOLERANCE)
        report.compared += len(rows)
        differing = [row for row in rows if row.differs]
        if not differing:
            continue
        with db.transaction() as conn:
            sites = dict(
                conn.execute(
                    select(meters.c.id, meters.c.site_id).where(
                        meters.c.id.in_([row.meter_id for row in differing])
                    )
                ).all()
            )
            enqueue_many_in(
                conn,
                [_message(organisation_id, row, sites.get(row.meter_id), at) for row in differing],
                at,
            )
        report.differing += [(row.meter_number, row.verdict) for row in differing]
    return report


def _message(
    organisation_id: int, row: ReconciliationRow, site_id: int | None, at: datetime
) -> NewNotification:
    params: dict[str, str] = {
        "meter": row.meter_number,
        "account": row.account_number,
        "meter_money": f"{row.meter_money:.2f}" if row.meter_money is not None else "-",
        "expected": f"{row.expected_meter_money:.2f}"
        if row.expected_meter_money is not None
        else "-",
        "verdict": row.verdict,
    }
    if row.purchases_meter != row.purchases_expected and None not in (
        row.purchases_meter,
        row.purchases_expected,
    ):
        params["purchases_meter"] = str(row.purchases_meter)
        params["purchases_expected"] = str(row.purchases_expected)
    return NewNotification(
        organisation_id=organisation_id,
        event=EVENT,
        key=f"meter:{row.meter_id}:money_differs:{at.date().isoformat()}",
        params=params,
        account_id=row.account_id,
        site_id=site_id,
    )
