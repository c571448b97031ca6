"""Notification outbox rows written straight into a database, for tests that need a history of
messages queued at chosen times (import as ``from support.outbox import …``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select

from meterdesk.db.database import Database
from meterdesk.notifications.tables import notification_outbox

# Minutes after a start at which each message of a history was queued, in the order they were
# written (so in id order): ids and times are out of step, and several share an instant.
TIED_MINUTES = (3, 0, 1, 1, 1, 5, 0, 3, 2, 1, 4, 4, 2)


def outbox_row(
    organisation_id: int,
    key: str,
    at: datetime,
    *,
    customer_id: int | None = None,
    account_id: int | None = None,
    status: str = "sent",
) -> dict[str, Any]:
    """A delivered (by default) SMS queued at ``at``; ``key`` makes its dedupe key unique."""
    return dict(
        organisation_id=organisation_id,
        event_kind="low_balance",
        event_key=key,
        customer_id=customer_id,
        account_id=account_id,
        channel="sms",
        address="139",
        language="zh",
        timezone="Asia/Shanghai",
        template_key="low_balance",
        params="{}",
        dedupe_key=key,
        urgency="normal",
        status=status,
        attempts=1,
        next_attempt_at=at,
        created_at=at,
        sent_at=at,
    )


def write_tied_history(
    db: Database, organisation_id: int, start: datetime, *, others: Sequence[int] = ()
) -> list[tuple[datetime, int]]:
    """The :data:`TIED_MINUTES` messages of the organisation, each followed by one of every
    other organisation at the same instant; the organisation's (queued at, id), newest first."""
    rows = [
        outbox_row(org, f"tied:{org}:{n}", start + timedelta(minutes=minute))
        for n, minute in enumerate(TIED_MINUTES)
        for org in (organisation_id, *others)
    ]
    with db.transaction() as conn:
        conn.execute(insert(notification_outbox), rows)
        found = conn.execute(
            select(notification_outbox.c.created_at, notification_outbox.c.id).where(
                notification_outbox.c.organisation_id == organisation_id,
                notification_outbox.c.event_key.like("tied:%"),
            )
        ).all()
    return sorted(((at, int(id_)) for at, id_ in found), reverse=True)
