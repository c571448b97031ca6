"""Meters and gateways with online state and last contact; device commands (pending, sent,
failed …) with each command's log; quarantined readings (异常读数) with release / discard; the
audit log (操作日志)."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse

from meterdesk.api.deps import AuditReader, QuarantineWriter, Reader
from meterdesk.api.queries import audit as audit_queries
from meterdesk.api.queries.common import Window
from meterdesk.api.routers import readings as readings_api
from meterdesk.api.schemas.common import Id
from meterdesk.devices.commands import service as commands
from meterdesk.reports import devices
from meterdesk.web.routes.common import answer_of, new_key, page

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 100
Text = Annotated[str | None, Query(max_length=64)]
COMMAND_STATUSES = ("pending", "sent", "confirmed", "failed", "cancelled")


@router.get("/meters", response_class=HTMLResponse)
def meters_page(
    request: Request,
    caller: Reader,
    q: Text = None,
    connection: Text = None,
    utility: Text = None,
    drift: Text = None,
    page_number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    where = devices.MeterFilter(q or None, connection or None, utility or None, drift == "1")
    with caller.db.read() as conn:
        rows, total = devices.meter_page(
            conn,
            caller.organisation_id,
            where,
            offset=(page_number - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
        )
        counts = devices.connection_counts(conn, caller.organisation_id)
        drifting = devices.drift_count(conn, caller.organisation_id)
    context = {
        "drifting": drifting,
        "meters": rows,
        "total": total,
        "counts": counts,
        "where": where,
        "page_number": page_number,
        "pages": max(1, -(-total // PAGE_SIZE)),
        "nav": "meters",
    }
    return page(request, caller, "meters.html", context)


@router.get("/gateways", response_class=HTMLResponse)
def gateways_page(request: Request, caller: Reader) -> HTMLResponse:
    with caller.db.read() as conn:
        rows = devices.gateway_rows(conn, caller.organisation_id)
    return page(request, caller, "gateways.html", {"gateways": rows, "nav": "meters"})


@router.get("/commands", response_class=HTMLResponse)
def commands_page(request: Request, caller: Reader, status: Text = None) -> HTMLResponse:
    chosen = status if status in COMMAND_STATUSES else None
    found = commands.list_commands(
        caller.db, organisation_id=caller.organisation_id, status=chosen, limit=300
    )
    with caller.db.read() as conn:
        counts = devices.command_counts(conn, caller.organisation_id)
    context = {
        "commands": found,
        "status": chosen,
        "counts": counts,
        "statuses": COMMAND_STATUSES,
        "nav": "commands",
    }
    return page(request, caller, "commands.html", context)


@router.get("/commands/{command_id}", response_class=HTMLResponse)
def command_page(command_id: Id, request: Request, caller: Reader) -> HTMLResponse:
    found = commands.command_log(
        caller.db, organisation_id=caller.organisation_id, command_id=command_id
    )
    context = {"command": found.command, "events": found.events, "nav": "commands"}
    return page(request, caller, "command.html", context)


@router.get("/quarantine", response_class=HTMLResponse)
def quarantine_page(
    request: Request,
    caller: Reader,
    status: Annotated[Literal["open", "released", "discarded"], Query()] = "open",
) -> HTMLResponse:
    found = readings_api.list_quarantine(
        caller, status=status, meter_id=None, limit=200, cursor=None
    )
    context = {"items": found.items, "status": status, "key": new_key(), "nav": "quarantine"}
    return page(request, caller, "quarantine.html", context)


@router.post("/quarantine/{quarantine_id}/{decision}", response_class=HTMLResponse)
def resolve(
    quarantine_id: Id,
    decision: Literal["release", "discard"],
    request: Request,
    caller: QuarantineWriter,
    idempotency_key: Annotated[str, Form(min_length=8, max_length=100)],
) -> HTMLResponse:
    if decision == "release":
        answer = answer_of(
            readings_api.release(
                quarantine_id, request, caller, f"{idempotency_key}:{quarantine_id}"
            )
        )
    else:
        answer = readings_api.discard(quarantine_id, caller).model_dump(mode="json")
    return page(request, caller, "partials/quarantine_done.html", {"answer": answer})


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    caller: AuditReader,
    action: Text = None,
    actor: Text = None,
    subject: Text = None,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    where = audit_queries.AuditFilter(None, None, action or None, actor or None, subject or None)
    with caller.db.read() as conn:
        rows, cursor = audit_queries.list_entries(
            conn, caller.organisation_id, where, Window(before, 100)
        )
    older = rows[-1]["id"] if cursor and rows else None
    chosen = {"action": action, "actor": actor, "subject": subject}
    export = urlencode({name: value for name, value in chosen.items() if value})
    context = {"entries": rows, "where": where, "older": older, "export": export, "nav": "audit"}
    return page(request, caller, "audit.html", context)
