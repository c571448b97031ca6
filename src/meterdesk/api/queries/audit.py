"""The audit log of one organisation, newest first.

Without ``since``/``until`` the list is in id order, read down (organisation, id). With either,
it is in time order, then id, read down (organisation, at, id) from the end of the range: in id
order every page took every entry of the range and sorted it, so ``until`` alone sorted the
whole history before it. Ids and times are not strictly in step (a service's entry carries the
time of its action, and concurrent writers commit out of order), so a time-bounded page goes on
after its cursor's entry's own (at, id), not below its id. The cursor names that entry's id in
both orders, so cursors, the console's links and clients stay as they were.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, or_, select

from meterdesk.api.pagination import encode
from meterdesk.api.queries.common import Window, page
from meterdesk.audit.tables import audit_log
from meterdesk.db.types import instant_int
from meterdesk.shared.errors import ValidationError


@dataclass(frozen=True)
class AuditFilter:
    since: datetime | None = None
    until: datetime | None = None
    action: str | None = None
    actor: str | None = None
    subject: str | None = None

    @property
    def timed(self) -> bool:
        """Bounded in time: listed in time order (then id) rather than id order."""
        return self.since is not None or self.until is not None


def _query(organisation_id: int, where: AuditFilter) -> Select[Any]:
    query = select(audit_log).where(audit_log.c.organisation_id == organisation_id)
    if where.since is not None:
        query = query.where(audit_log.c.at >= instant_int(where.since))
    if where.until is not None:
        query = query.where(audit_log.c.at < instant_int(where.until))
    for value, column in (
        (where.action, audit_log.c.action),
        (where.actor, audit_log.c.actor),
        (where.subject, audit_log.c.subject),
    ):
        if value is not None:
            query = query.where(column == value)
    return query


def _entry(row: Any) -> dict[str, Any]:
    return {**dict(row), "detail": json.loads(row["detail"])}


def list_entries(
    conn: Connection, organisation_id: int, where: AuditFilter, window: Window
) -> tuple[list[dict[str, Any]], str | None]:
    """One page, newest first (see the module's docstring for the order), and the cursor of
    the next (the last entry's id), or None on the last page. ``window.after`` is the cursor
    of the previous page; with a time bound it must be an entry of the organisation
    (ValidationError otherwise: another's would give away its time)."""
    if not where.timed:
        rows, cursor = page(
            conn,
            _query(organisation_id, where),
            audit_log.c.id,
            after=window.after,
            limit=window.limit,
            descending=True,
        )
        return [_entry(row) for row in rows], cursor
    after: list[ColumnElement[bool]] = []
    if window.after is not None:
        at = _at_of(conn, organisation_id, window.after)
        # The next page ends at the cursor's entry, not at ``until``: with both, SQLite may
        # take ``until`` as the end of its index range and walk every row of the pages before.
        if where.until is None or at < where.until:
            where = replace(where, until=None)
            # "at <= its at" is the index range; the rest only decides the ties at that instant.
            after = [audit_log.c.at <= at, or_(audit_log.c.at < at, audit_log.c.id < window.after)]
    query = _query(organisation_id, where).where(*after)
    ordered = query.order_by(audit_log.c.at.desc(), audit_log.c.id.desc())
    rows = conn.execute(ordered.limit(window.limit + 1)).mappings().all()
    if len(rows) <= window.limit:
        return [_entry(row) for row in rows], None
    return [_entry(row) for row in rows[: window.limit]], encode(int(rows[window.limit - 1]["id"]))


def _at_of(conn: Connection, organisation_id: int, entry_id: int) -> datetime:
    """The time of the organisation's entry ``entry_id``, where a time-bounded page goes on."""
    at: datetime | None = conn.execute(
        select(audit_log.c.at).where(
            audit_log.c.id == entry_id, audit_log.c.organisation_id == organisation_id
        )
    ).scalar_one_or_none()
    if at is None:
        raise ValidationError(f"cursor: {entry_id} is not a cursor this list gave")
    return at


def export_rows(
    conn: Connection, organisation_id: int, where: AuditFilter, limit: int
) -> Iterator[dict[str, Any]]:
    """The filtered entries oldest first, at most ``limit``: by id, or with a time bound by
    time then id, read up (organisation, at, id) from the start of the range (in id order the
    whole range was sorted to give its first ``limit``)."""
    order = (audit_log.c.at, audit_log.c.id) if where.timed else (audit_log.c.id,)
    query = _query(organisation_id, where).order_by(*order).limit(limit)
    for row in conn.execute(query).mappings():
        yield dict(row)
