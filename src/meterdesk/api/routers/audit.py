"""The audit log: who did what to money or supply, when, and from which address."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from meterdesk.api.deps import AuditReader
from meterdesk.api.errors import ERROR_RESPONSES
from meterdesk.api.pagination import Cursor, Limit, Page, after_id
from meterdesk.api.queries import audit as queries
from meterdesk.api.queries.common import Window
from meterdesk.api.schemas.audit import AuditEntryOut
from meterdesk.api.schemas.common import Instant
from meterdesk.shared.text import spreadsheet_cell

router = APIRouter(responses=ERROR_RESPONSES, tags=["audit"])
Text = Annotated[str | None, Query(max_length=200)]
CSV_COLUMNS = ("id", "at", "actor", "action", "subject", "source", "detail")


def _filter(
    since: Instant | None,
    until: Instant | None,
    action: str | None,
    actor: str | None,
    subject: str | None,
) -> queries.AuditFilter:
    return queries.AuditFilter(since, until, action, actor, subject)


@router.get("/audit", response_model=Page[AuditEntryOut])
def list_audit(
    caller: AuditReader,
    since: Instant | None = None,
    until: Instant | None = None,
    action: Text = None,
    actor: Text = None,
    subject: Text = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[AuditEntryOut]:
    """Entries newest first, filtered by time ``[since, until)``, action, actor, subject.
    Newest by id; with ``since`` or ``until``, by time, then id (ids and times are not strictly
    in step across writers); the cursor names the last entry of a page, and the next page goes
    on after it in that order (with a time bound, a cursor that names no entry of the
    organisation is refused)."""
    where = _filter(since, until, action, actor, subject)
    with caller.db.read() as conn:
        rows, next_cursor = queries.list_entries(
            conn, caller.organisation_id, where, Window(after_id(cursor), limit)
        )
    return Page[AuditEntryOut](
        items=[AuditEntryOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/audit/export",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "CSV"}
    },
)
def export_audit(
    caller: AuditReader,
    since: Instant | None = None,
    until: Instant | None = None,
    action: Text = None,
    actor: Text = None,
    subject: Text = None,
) -> StreamingResponse:
    """The filtered entries as CSV (UTF-8 with BOM, opens in Excel), oldest first: by id, or
    with ``since`` or ``until`` by time, then id."""
    where = _filter(since, until, action, actor, subject)
    with caller.db.read() as conn:
        rows = list(
            queries.export_rows(
                conn, caller.organisation_id, where, caller.ctx.config.max_export_rows
            )
        )

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        buffer.write("\ufeff")
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            detail = json.dumps(json.loads(row["detail"]), ensure_ascii=False)
            values = (row["actor"], row["action"], row["subject"], row["source"] or "", detail)
            writer.writerow(
                [row["id"], row["at"].isoformat(), *(spreadsheet_cell(v) for v in values)]
            )
            if buffer.tell() > 64_000:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    headers = {"Content-Disposition": 'attachment; filename="audit.csv"'}
    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8", headers=headers)
