"""Notifications (F-NOTIFY): the log of every message (the outbox) with its delivery attempts,
retrying a failed one, the channel settings and the quiet hours.

Secrets never travel through here: a channel's ``secret_refs`` name environment variables, and
an answer shows each secret as that name and whether the variable is set in the server's
environment — never a value.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from meterdesk.api.deps import Caller, IdempotencyKey, NotificationsWriter, Reader, SettingsWriter
from meterdesk.api.errors import ERROR_RESPONSES
from meterdesk.api.idempotency import audited, run_once
from meterdesk.api.pagination import Cursor, Limit, Page, after_id, encode
from meterdesk.api.schemas.common import BigId, Id, Instant
from meterdesk.api.schemas.notifications import (
    AttemptOut,
    ChannelIn,
    ChannelName,
    ChannelOut,
    EventName,
    NotificationCountsOut,
    NotificationDetailOut,
    NotificationOut,
    QuietHoursIn,
    QuietHoursOut,
    StatusName,
    TestMessageIn,
)
from meterdesk.notifications import channel_status, channel_test, configuration, service
from meterdesk.notifications.model import Channel

router = APIRouter(responses=ERROR_RESPONSES, tags=["notifications"])
ChannelPath = Annotated[
    ChannelName, Path(description="sms, voice, email, wechat, wechat_mini, push, webhook, log")
]


@router.get("/notifications", response_model=Page[NotificationOut])
def list_notifications(
    caller: Reader,
    status: StatusName | None = None,
    event: EventName | None = None,
    channel: ChannelName | None = None,
    account_id: Id | None = None,
    customer_id: Id | None = None,
    since: Instant | None = None,
    until: Instant | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[NotificationOut]:
    """Messages newest first, filtered by status, event, channel, account, customer and the time
    they were queued ``[since, until)``. Newest by id; with ``since`` or ``until``, by the time
    queued, then id (ids and times are not strictly in step across writers); the cursor names
    the last message of a page, and the next page goes on after it in that order."""
    rows = service.list_notifications(
        caller.db,
        organisation_id=caller.organisation_id,
        status=status,
        event=event,
        channel=channel,
        account_id=account_id,
        customer_id=customer_id,
        since=since,
        until=until,
        before_id=after_id(cursor),
        limit=limit + 1,
    )
    next_cursor = encode(int(rows[limit - 1]["id"])) if len(rows) > limit else None
    return Page[NotificationOut](
        items=[NotificationOut.model_validate(r) for r in rows[:limit]], next_cursor=next_cursor
    )


@router.get("/notification-counts", response_model=NotificationCountsOut)
def notification_counts(caller: Reader) -> NotificationCountsOut:
    """How many messages are in each status."""
    counts = service.status_counts(caller.db, organisation_id=caller.organisation_id)
    return NotificationCountsOut.model_validate(
        {name: counts.get(name, 0) for name in NotificationCountsOut.model_fields}
    )


def _detail(caller: Caller, notification_id: int) -> NotificationDetailOut:
    found = service.get_notification(
        caller.db, organisation_id=caller.organisation_id, outbox_id=notification_id
    )
    attempts = service.notification_attempts(
        caller.db, organisation_id=caller.organisation_id, outbox_id=notification_id
    )
    return NotificationDetailOut.model_validate(
        {**found, "attempt_log": [AttemptOut.model_validate(a) for a in attempts]}
    )


@router.get("/notifications/{notification_id}", response_model=NotificationDetailOut)
def get_notification(notification_id: BigId, caller: Reader) -> NotificationDetailOut:
    """One message with every delivery attempt, oldest first."""
    return _detail(caller, notification_id)


@router.post("/notifications/{notification_id}/retry", response_model=NotificationDetailOut)
def retry_notification(
    notification_id: BigId, request: Request, caller: NotificationsWriter, key: IdempotencyKey
) -> JSONResponse:
    """Send a failed or suppressed message again now (409 for any other status); its attempts
    start over. A message that failed for want of an address takes the customer's current one
    (409, with what is missing, while the customer still has none)."""

    def perform() -> tuple[BaseModel, bool]:
        service.retry_notification(
            caller.db,
            organisation_id=caller.organisation_id,
            outbox_id=notification_id,
            actor=caller.actor,
        )
        return _detail(caller, notification_id), False

    return run_once(
        caller,
        request,
        key=key,
        payload={},
        action="notifications.retry",
        subject=f"notification:{notification_id}",
        perform=perform,
        status_code=200,
    )


def channel_out(view: channel_status.ChannelView) -> ChannelOut:
    values: dict[str, Any] = {**view.__dict__, "secrets": [s.__dict__ for s in view.secrets]}
    return ChannelOut.model_validate(values)


@router.get("/notification-channels", response_model=Page[ChannelOut])
def list_channels(caller: Reader) -> Page[ChannelOut]:
    """Every channel (seven, one page), configured or not, with its settings check."""
    views = channel_status.channel_views(caller.db, organisation_id=caller.organisation_id)
    return Page[ChannelOut](items=[channel_out(view) for view in views], next_cursor=None)


@router.get("/notification-channels/{channel}", response_model=ChannelOut)
def get_channel(channel: ChannelPath, caller: Reader) -> ChannelOut:
    return channel_out(
        channel_status.channel_view(
            caller.db, organisation_id=caller.organisation_id, channel=Channel(channel)
        )
    )


@router.put("/notification-channels/{channel}", response_model=ChannelOut)
def put_channel(channel: ChannelPath, body: ChannelIn, caller: SettingsWriter) -> ChannelOut:
    """Create or replace a channel's settings. Secrets go in environment variables named in
    ``secret_refs``; a setting whose name says it is a secret is refused (422)."""
    configuration.configure_channel(
        caller.db,
        organisation_id=caller.organisation_id,
        channel=channel,
        provider=body.provider,
        enabled=body.enabled,
        config=body.config,
        secret_refs=body.secret_refs,
        events=body.events,
        actor=caller.actor,
    )
    audited(
        caller,
        action="notifications.configure_channel",
        subject=f"channel:{channel}",
        detail={"provider": body.provider, "enabled": body.enabled},
    )
    return get_channel(channel, caller)


@router.post(
    "/notification-channels/{channel}/test", response_model=NotificationDetailOut, status_code=202
)
def send_test_message(
    channel: ChannelPath, body: TestMessageIn, caller: SettingsWriter
) -> NotificationDetailOut:
    """Send a test message through the channel now (测试消息) and answer with its log entry;
    follow ``GET /notifications/{id}`` to see it sent, or failed with the provider's reason.
    422 when the channel is not configured, disabled or the address does not fit it."""
    found = channel_test.send_test_message(
        caller.db,
        organisation_id=caller.organisation_id,
        channel=channel,
        address=body.address,
        language=body.language,
        actor=caller.actor,
        source=caller.address[:100],
    )
    return _detail(caller, found)


def _quiet(caller: Caller) -> QuietHoursOut:
    found = channel_status.quiet_hours(caller.db, organisation_id=caller.organisation_id)
    return (
        QuietHoursOut(start=found[0], end=found[1])
        if found
        else QuietHoursOut(start=None, end=None)
    )


@router.get("/notification-quiet-hours", response_model=QuietHoursOut)
def get_quiet_hours(caller: Reader) -> QuietHoursOut:
    """The daily window (local wall time of the site) in which normal messages wait."""
    return _quiet(caller)


@router.put("/notification-quiet-hours", response_model=QuietHoursOut)
def put_quiet_hours(body: QuietHoursIn, caller: SettingsWriter) -> QuietHoursOut:
    """Set the quiet window (``start`` = ``end`` means none), or clear it with both null."""
    configuration.set_quiet_hours(
        caller.db,
        organisation_id=caller.organisation_id,
        start=body.start,
        end=body.end,
        actor=caller.actor,
    )
    audited(
        caller,
        action="notifications.set_quiet_hours",
        subject="quiet_hours",
        detail={"start": body.start, "end": body.end},
    )
    return _quiet(caller)
