"""Writing audit entries inside the caller's transaction, so an action and its record of who did
it commit together or not at all."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from meterdesk.audit.tables import audit_log


@dataclass(frozen=True)
class Entry:
    organisation_id: int
    actor: str
    action: str
    subject: str
    at: datetime
    detail: dict[str, Any] | None = None
    source: str | None = None


def record(
    conn: Connection,
    *,
    organisation_id: int,
    actor: str,
    action: str,
    subject: str,
    at: datetime,
    detail: dict[str, Any] | None = None,
    source: str | None = None,
) -> None:
    entry = Entry(organisation_id, actor, action, subject, at, detail, source)
    conn.execute(insert(audit_log).values(**_row(entry)))


def last_detail(
    conn: Connection, *, organisation_id: int, action: str, subject: str
) -> dict[str, Any] | None:
    """The detail of the latest entry of an action on a subject, or None if there is none."""
    found = conn.execute(
        select(audit_log.c.detail)
        .where(
            audit_log.c.organisation_id == organisation_id,
            audit_log.c.action == action,
            audit_log.c.subject == subject,
        )
        .order_by(audit_log.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return None if found is None else dict(json.loads(found))


def record_many(conn: Connection, entries: Sequence[Entry]) -> None:
    """Several entries in one statement (a batch of control decisions)."""
    if not entries:
        return
    conn.execute(_INSERT, [_row(entry) for entry in entries])


_INSERT = insert(audit_log)  # built once: a batch of control decisions audits its commands


def _row(entry: Entry) -> dict[str, Any]:
    return {
        "organisation_id": entry.organisation_id,
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "subject": entry.subject,
        "detail": json.dumps(entry.detail or {}, ensure_ascii=False, sort_keys=True, default=str),
        "source": entry.source,
    }
