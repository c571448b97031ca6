"""Pre-entered accounts (预录入), opened later with one call, and bulk import from CSV or Excel
with a per-row report of what was done or exactly why not."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from meterdesk.api.deps import AccountsWriter, Caller, IdempotencyKey, Reader
from meterdesk.api.errors import ERROR_RESPONSES
from meterdesk.api.idempotency import run_once
from meterdesk.api.pagination import Cursor, Limit, Page, after_id
from meterdesk.api.queries import accounts as queries
from meterdesk.api.queries.common import Window
from meterdesk.api.routers.accounts import replay_doc, require_money
from meterdesk.api.schemas.accounts import (
    ImportOut,
    ImportRowOut,
    OpenedAccountOut,
    PresetIn,
    PresetOut,
)
from meterdesk.api.schemas.common import Id
from meterdesk.billing import presets
from meterdesk.shared.errors import ValidationError
from meterdesk.shared.sheets import SheetRow

router = APIRouter(responses=ERROR_RESPONSES, tags=["accounts"])
SUFFIXES = (".csv", ".xlsx", ".xlsm")


def _preset(caller: Caller, preset_id: Id) -> PresetOut:
    with caller.db.read() as conn:
        return PresetOut.model_validate(queries.one_preset(conn, caller.organisation_id, preset_id))


@router.get("/account-presets", response_model=Page[PresetOut])
def list_presets(
    caller: Reader,
    status: Literal["pending", "opened"] | None = "pending",
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[PresetOut]:
    with caller.db.read() as conn:
        rows, next_cursor = queries.list_presets(
            conn, caller.organisation_id, status, Window(after_id(cursor), limit)
        )
    return Page[PresetOut](
        items=[PresetOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.post("/account-presets", response_model=PresetOut, status_code=201)
def add_preset(body: PresetIn, caller: AccountsWriter) -> PresetOut:
    """Pre-enter an account: checked now (room, meters, tariffs exist), opened later."""
    data = presets.PresetData(**body.model_dump())
    preset_id = presets.add_preset(caller.db, organisation_id=caller.organisation_id, data=data)
    return _preset(caller, preset_id)


@router.get("/account-presets/{preset_id}", response_model=PresetOut)
def get_preset(preset_id: Id, caller: Reader) -> PresetOut:
    return _preset(caller, preset_id)


@router.post(
    "/account-presets/{preset_id}/open",
    response_model=OpenedAccountOut,
    status_code=201,
    responses=replay_doc(OpenedAccountOut),
)
def open_preset(
    preset_id: Id, request: Request, caller: AccountsWriter, key: IdempotencyKey
) -> JSONResponse:
    """Open a pre-entered account with one call."""
    found = _preset(caller, preset_id)
    require_money(caller, str(found.data.get("initial_credit") or "0"))

    def perform() -> tuple[BaseModel, bool]:
        account_id = presets.open_preset(
            caller.db,
            organisation_id=caller.organisation_id,
            account_number=found.account_number,
            actor=caller.actor,
        )
        with caller.db.read() as conn:
            answer = OpenedAccountOut(
                id=account_id,
                number=found.account_number,
                meter_ids=queries.meter_ids(conn, account_id),
                initial_transfer_id=queries.initial_transfer(conn, account_id),
            )
        return answer, False

    return run_once(
        caller,
        request,
        key=key,
        payload={"preset_id": preset_id},
        action="account.open_preset",
        subject=f"account:{found.account_number}",
        perform=perform,
    )


def _rows(upload: UploadFile, content: bytes) -> list[SheetRow]:
    suffix = Path(upload.filename or "").suffix.lower()
    if suffix not in SUFFIXES:
        raise ValidationError("file: give a .csv or .xlsx file")
    with tempfile.TemporaryDirectory(prefix="meterdesk-import-") as scratch:
        path = Path(scratch) / f"upload{suffix}"
        path.write_bytes(content)
        try:
            return presets.read_rows(path)
        except (UnicodeDecodeError, ValueError, KeyError, OSError) as error:
            raise ValidationError(
                f"file: cannot be read as {suffix[1:]} ({type(error).__name__})"
            ) from None


def _import(caller: Caller, rows: list[SheetRow], open_now: bool) -> ImportOut:
    results = presets.import_accounts(
        caller.db,
        organisation_id=caller.organisation_id,
        rows=rows,
        open_now=open_now,
        actor=caller.actor,
    )
    return ImportOut(
        opened=open_now,
        ok=sum(r.ok for r in results),
        failed=sum(not r.ok for r in results),
        rows=[
            ImportRowOut(
                row=r.row,
                account_number=r.account_number,
                ok=r.ok,
                message=r.message,
                phone_warning=r.phone_warning,
            )
            for r in results
        ],
    )


@router.post(
    "/account-imports", response_model=ImportOut, status_code=201, responses=replay_doc(ImportOut)
)
def import_accounts(
    request: Request,
    caller: AccountsWriter,
    key: IdempotencyKey,
    file: Annotated[UploadFile, File(description="CSV (UTF-8) or Excel .xlsx; see docs/api.md")],
    open_now: Annotated[
        bool, Form(description="open the accounts now, else pre-enter them")
    ] = False,
) -> JSONResponse:
    """Bulk import: each row on its own (a bad row changes nothing); a report row per row."""
    content = file.file.read(caller.ctx.config.max_upload_bytes + 1)
    if len(content) > caller.ctx.config.max_upload_bytes:
        raise ValidationError(f"file: larger than {caller.ctx.config.max_upload_bytes} bytes")
    rows = _rows(file, content)
    if open_now:
        for row in rows:
            fields = {(k or "").strip().lower(): v for k, v in row.items()}
            require_money(caller, (fields.get("initial_credit") or "0").strip())
    payload = {"file": hashlib.sha256(content).hexdigest(), "open_now": open_now}
    return run_once(
        caller,
        request,
        key=key,
        payload=payload,
        action="account.import",
        subject=f"accounts:{len(rows)}",
        perform=lambda: (_import(caller, rows, open_now), False),
    )
