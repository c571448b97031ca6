"""System notices (系统通知 / 公告, F-NOTIFY): an operator tells the tenants of the whole
organisation, a site, a building, a floor or some rooms something, with the delivery counts of
each notice. Sending is idempotent: a repeat with the same ``Idempotency-Key`` answers the first
notice and queues nothing. A notice may be scheduled (``send_at``) and cancelled: its messages
that have not gone out are stopped."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from meterdesk.api.deps import IdempotencyKey, NotificationsWriter, Reader
from meterdesk.api.errors import ERROR_RESPONSES
from meterdesk.api.idempotency import run_once
from meterdesk.api.pagination import Cursor, Limit, Page, after_id, encode
from meterdesk.api.routers.accounts import replay_doc
from meterdesk.api.schemas.common import BigId
from meterdesk.api.schemas.notices import NoticeCancelledOut, NoticeIn, NoticeOut
from meterdesk.notifications import notice_model, notices

router = APIRouter(responses=ERROR_RESPONSES, tags=["notifications"])


@router.post("/notices", response_model=NoticeOut, status_code=201, responses=replay_doc(NoticeOut))
def send_notice(
    body: NoticeIn, request: Request, caller: NotificationsWriter, key: IdempotencyKey
) -> JSONResponse:
    """Send a notice to the customers of the open accounts on the rooms in scope, once per
    customer and channel. 404 for a place not of this organisation, 409 when the scope has no
    open account (nothing is written), 422 for a bad subject, text, scope or channel, or a
    ``send_at`` without an offset, not in the future or more than 90 days ahead."""
    checked = notice_model.notice_request(
        scope_kind=body.scope,
        scope_ids=body.ids,
        subject_text=body.subject,
        body=body.text,
        urgent=body.urgent,
        channel_names=body.channels,
        send_at=body.send_at,
    )

    def perform() -> tuple[BaseModel, bool]:
        found, replayed = notices.send_notice(
            caller.db,
            organisation_id=caller.organisation_id,
            request=checked,
            key=key,
            actor=caller.actor,
        )
        return NoticeOut.model_validate(found), replayed

    return run_once(
        caller,
        request,
        key=key,
        payload=body,
        action="notices.send",
        subject="notices",
        perform=perform,
    )


@router.get("/notices", response_model=Page[NoticeOut])
def list_notices(caller: Reader, limit: Limit = 50, cursor: Cursor = None) -> Page[NoticeOut]:
    """Notices newest first, each with how many of its messages are pending, sent, failed..."""
    rows = notices.list_notices(
        caller.db,
        organisation_id=caller.organisation_id,
        before_id=after_id(cursor),
        limit=limit + 1,
    )
    next_cursor = encode(int(rows[limit - 1]["id"])) if len(rows) > limit else None
    return Page[NoticeOut](
        items=[NoticeOut.model_validate(r) for r in rows[:limit]], next_cursor=next_cursor
    )


@router.get("/notices/{notice_id}", response_model=NoticeOut)
def get_notice(notice_id: BigId, caller: Reader) -> NoticeOut:
    """One notice with its delivery counts (404 for another organisation's)."""
    found = notices.get_notice(
        caller.db, organisation_id=caller.organisation_id, notice_id=notice_id
    )
    return NoticeOut.model_validate(found)


@router.post("/notices/{notice_id}/cancel", response_model=NoticeCancelledOut)
def cancel_notice(
    notice_id: BigId, request: Request, caller: NotificationsWriter, key: IdempotencyKey
) -> JSONResponse:
    """Stop every message of the notice that has not gone out (``stopped``); those a dispatcher
    had already taken or sent cannot be recalled (``gone``). Cancelling a cancelled notice
    answers the same (200, ``already_cancelled``, ``Idempotent-Replay: true``) and changes
    nothing. 404 for another organisation's notice."""

    def perform() -> tuple[BaseModel, bool]:
        found, before = notices.cancel_notice(
            caller.db,
            organisation_id=caller.organisation_id,
            notice_id=notice_id,
            actor=caller.actor,
        )
        answer = NoticeCancelledOut.model_validate({**found, "already_cancelled": before})
        return answer, before

    return run_once(
        caller,
        request,
        key=key,
        payload={},
        action="notices.cancel",
        subject=f"notice:{notice_id}",
        perform=perform,
        status_code=200,
    )
