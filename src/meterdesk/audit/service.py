"""Writing audit entries inside the caller's transaction, so an action and its record of who did
it commit together or not at all."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert

from meterdesk.audit.tables import audit_log


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
    conn.execute(
        insert(audit_log).values(
            organisation_id=organisation_id,
            at=at,
            actor=actor,
            action=action,
            subject=subject,
            detail=json.dumps(detail or {}, ensure_ascii=False, sort_keys=True, default=str),
            source=source,
        )
    )
