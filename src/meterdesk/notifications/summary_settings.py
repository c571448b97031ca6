"""Per organisation: how often tenants get a deduction summary (扣费通知) — off, daily, monthly.

Off by default and stored as *no row*: a channel that subscribes to every event (``events``
NULL) would otherwise start sending, and paying for, an SMS per tenant per day the moment the
event existed. Changing it is audited like the quiet hours.
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, insert, select

from meterdesk.audit import service as audit
from meterdesk.db.database import Database
from meterdesk.notifications.summary_periods import Cadence, cadence
from meterdesk.notifications.tables import notification_summaries


def set_cadence(db: Database, *, organisation_id: int, value: str, actor: str) -> Cadence:
    """Turn the organisation's summaries off, or on daily / monthly."""
    which = cadence(value)
    table = notification_summaries
    with db.transaction() as conn:
        conn.execute(delete(table).where(table.c.organisation_id == organisation_id))
        if which is not Cadence.OFF:
            conn.execute(
                insert(table).values(
                    organisation_id=organisation_id,
                    cadence=which.value,
                    updated_at=db.clock(),
                    updated_by=actor,
                )
            )
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="notifications.set_summaries",
            subject="summaries",
            at=db.clock(),
            detail={"cadence": which.value},
        )
    return which


def cadence_in(conn: Connection, organisation_id: int) -> Cadence:
    table = notification_summaries
    found = conn.execute(
        select(table.c.cadence).where(table.c.organisation_id == organisation_id)
    ).scalar_one_or_none()
    return Cadence.OFF if found is None else Cadence(found)


def cadence_of(db: Database, *, organisation_id: int) -> Cadence:
    with db.read() as conn:
        return cadence_in(conn, organisation_id)


def organisations_on(conn: Connection) -> dict[int, Cadence]:
    """Every organisation with summaries on, and its cadence: the one query a ``run`` step
    costs while nobody has turned summaries on (the table is empty, or nearly)."""
    table = notification_summaries
    rows = conn.execute(select(table.c.organisation_id, table.c.cadence)).all()
    return {int(org): Cadence(value) for org, value in rows}
