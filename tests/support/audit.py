"""Audit entries written straight into a database at chosen times, for tests of the audit
list's order and pages (import as ``from support.audit import …``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select

from meterdesk.audit.service import Entry, record_many
from meterdesk.audit.tables import audit_log
from meterdesk.db.database import Database
from support.outbox import TIED_MINUTES

TIED_SUBJECT = "tied"


def write_tied_entries(
    db: Database, organisation_id: int, start: datetime, *, others: Sequence[int] = ()
) -> list[tuple[datetime, int]]:
    """One entry of the organisation at each of :data:`TIED_MINUTES` after ``start``, in that
    order (so ids and times are out of step, and several share an instant), each followed by
    one of every other organisation at the same instant; actions alternate ``tied.even`` and
    ``tied.odd``. The organisation's (at, id), newest first."""
    entries = [
        Entry(org, "test:operator", f"tied.{'odd' if n % 2 else 'even'}", TIED_SUBJECT, at)
        for n, minute in enumerate(TIED_MINUTES)
        for at in [start + timedelta(minutes=minute)]
        for org in (organisation_id, *others)
    ]
    with db.transaction() as conn:
        record_many(conn, entries)
        found = conn.execute(
            select(audit_log.c.at, audit_log.c.id).where(
                audit_log.c.organisation_id == organisation_id,
                audit_log.c.subject == TIED_SUBJECT,
            )
        ).all()
    return sorted(((at, int(id_)) for at, id_ in found), reverse=True)
