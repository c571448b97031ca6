"""The audit log of one organisation, newest first."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, select

from meterdesk.api.queries.common import Window, page
from meterdesk.audit.tables import audit_log
from meterdesk.db.types import instant_int


@dataclass(frozen=True)
class AuditFilter:
    since: datetime | None = None
    until: datetime | None = None
    action: str | None = None
    actor: str | None = None
    subject: str | None = None


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
    query = _query(organisation_id, where)
    rows, cursor = page(
        conn, query, audit_log.c.id, after=window.after, limit=window.limit, descending=True
    )
    return [_entry(row) for row in rows], cursor


def export_rows(
    conn: Connection, organisation_id: int, where: AuditFilter, limit: int
) -> Iterator[dict[str, Any]]:
    query = _query(organisation_id, where).order_by(audit_log.c.id).limit(limit)
    for row in conn.execute(query).mappings():
        yield dict(row)
