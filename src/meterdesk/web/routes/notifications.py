"""Notifications in the console (F-NOTIFY): the message log with status colours, filters, each
message's delivery attempts and a retry button for failed ones; and the channel settings page
(provider and settings per channel, secrets as environment-variable names only, a test message
per channel, quiet hours).

Changes go through the API's own handlers (``retry_notification``, ``put_channel``,
``put_quiet_hours``): the same roles, validation, audit entries and, for a retry, the same
idempotency key store.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse

from meterdesk.api.deps import Caller, NotificationsWriter, Reader, SettingsWriter
from meterdesk.api.routers import notifications as api
from meterdesk.api.routers.summaries import get_summaries
from meterdesk.api.schemas.common import BigId
from meterdesk.api.schemas.notifications import (
    ChannelIn,
    ChannelName,
    ChannelOut,
    QuietHoursIn,
    TestMessageIn,
)
from meterdesk.billing.accounts import account_by_number
from meterdesk.notifications import service
from meterdesk.notifications.configuration import PROVIDERS, SECRET_NAMES, operator_landlines
from meterdesk.notifications.model import SUBSCRIBABLE_EVENTS, Channel, EventKind, Status
from meterdesk.shared.contacts import readable
from meterdesk.shared.errors import MeterdeskError, ValidationError
from meterdesk.web.forms import blank_to_none, build
from meterdesk.web.routes.common import answer_of, new_key, page

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 100
Text = Annotated[str | None, Query(max_length=64)]
STATUSES = tuple(s.value for s in Status)
EVENTS = tuple(e.value for e in EventKind)  # the log filter
SUBSCRIBABLE = tuple(e.value for e in SUBSCRIBABLE_EVENTS)  # a channel card's choices
CHANNELS = tuple(c.value for c in Channel)
RETRIABLE = (Status.FAILED.value, Status.SUPPRESSED.value)


def _choice(value: str | None, allowed: tuple[str, ...]) -> str | None:
    return value if value in allowed else None


def _account_id(caller: Caller, number: str | None) -> tuple[int | None, bool]:
    """(the account's id, whether the number was found) for the account filter."""
    if not blank_to_none(number):
        return None, True
    with caller.db.read() as conn:
        try:
            found = account_by_number(
                conn, organisation_id=caller.organisation_id, number=str(number).strip()
            )
        except MeterdeskError:
            return None, False
    return int(str(found["id"])), True


def _older(where: dict[str, str | None], rows: list[dict[str, Any]]) -> str | None:
    """The link to the next (older) page, keeping the filters."""
    if len(rows) <= PAGE_SIZE:
        return None
    kept = {name: value for name, value in where.items() if value}
    return "/notifications?" + urlencode({**kept, "before": rows[PAGE_SIZE - 1]["id"]})


def _rows(
    caller: Caller, where: dict[str, str | None], account_id: int | None, before: int | None
) -> list[dict[str, Any]]:
    """One page of the log and one more row, which says whether there is an older page."""
    return service.list_notifications(
        caller.db,
        organisation_id=caller.organisation_id,
        status=where["status"],
        event=where["event"],
        channel=where["channel"],
        account_id=account_id,
        before_id=before,
        limit=PAGE_SIZE + 1,
    )


@router.get("/notifications", response_class=HTMLResponse)
def notifications_page(
    request: Request,
    caller: Reader,
    status: Text = None,
    event: Text = None,
    channel: Text = None,
    account: Text = None,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    where = {
        "status": _choice(status, STATUSES),
        "event": _choice(event, EVENTS),
        "channel": _choice(channel, CHANNELS),
        "account": blank_to_none(account),
    }
    account_id, known = _account_id(caller, account)
    rows = _rows(caller, where, account_id, before) if known else []
    context = {
        "items": rows[:PAGE_SIZE],
        "older_href": _older(where, rows),
        "counts": service.status_counts(caller.db, organisation_id=caller.organisation_id),
        "where": where,
        "unknown_account": not known,
        "statuses": STATUSES,
        "events": EVENTS,
        "channels": CHANNELS,
        "retriable": RETRIABLE,
        "key": new_key(),
        "nav": "notifications",
    }
    return page(request, caller, "notifications.html", context)


@router.get("/notifications/{notification_id}/attempts", response_class=HTMLResponse)
def attempts_fragment(notification_id: BigId, request: Request, caller: Reader) -> HTMLResponse:
    """The message's delivery attempts, as a table row under the message."""
    found = api.get_notification(notification_id, caller)
    context = {"item": found.model_dump(), "attempts": found.attempt_log}
    return page(request, caller, "partials/notification_attempts.html", context)


@router.post("/notifications/{notification_id}/retry", response_class=HTMLResponse)
def retry(
    notification_id: BigId,
    request: Request,
    caller: NotificationsWriter,
    idempotency_key: Annotated[str, Form(min_length=8, max_length=100)],
) -> HTMLResponse:
    key = f"{idempotency_key}:notification:{notification_id}"
    answer = answer_of(api.retry_notification(notification_id, request, caller, key))
    context = {"item": answer, "retriable": RETRIABLE, "key": new_key(), "retried": True}
    return page(request, caller, "partials/notification_row.html", context)


# --- channel settings and quiet hours ----------------------------------------------------------


def _card(channel: ChannelOut, saved: bool = False) -> dict[str, Any]:
    """What the channel's card needs: its settings, every secret its providers may read, and
    the operator addresses SMS cannot reach (landlines: saved, said in the console's words)."""
    which = Channel(channel.channel)
    names = sorted({n for p in PROVIDERS[which] for n in SECRET_NAMES[p]})
    variables = {s.name: s.variable for s in channel.secrets}
    return {
        "c": channel,
        "secret_fields": [(name, variables.get(name) or "") for name in names]
        + [(s.name, s.variable or "") for s in channel.secrets if s.name not in names],
        "config_text": json.dumps(channel.config, ensure_ascii=False, indent=2)
        if channel.config
        else "{}",
        "events": SUBSCRIBABLE,
        "saved": saved,
        "landlines": [readable(n) for _, n in operator_landlines(which, channel.config)],
    }


@router.get("/settings/notifications", response_class=HTMLResponse)
def settings_page(request: Request, caller: Reader) -> HTMLResponse:
    channels = api.list_channels(caller).items
    context = {
        "cards": [_card(c) for c in channels],
        "quiet": api.get_quiet_hours(caller),
        "summaries": get_summaries(caller),
        "nav": "notifications",
    }
    return page(request, caller, "settings_notifications.html", context)


def _config(text: str) -> dict[str, Any]:
    try:
        found = json.loads(text or "{}")
    except json.JSONDecodeError as error:
        raise ValidationError(
            f"config: not valid JSON ({error.msg} at line {error.lineno})"
        ) from None
    except RecursionError:  # "[[[[…" thousands deep: the parser's stack, a 500 before
        raise ValidationError("config: JSON nested too deeply") from None
    if not isinstance(found, dict):
        raise ValidationError('config: give a JSON object, e.g. {"url": "https://…"}')
    return found


@router.post("/settings/notifications/channels/{channel}", response_class=HTMLResponse)
def save_channel(
    channel: ChannelName,
    request: Request,
    caller: SettingsWriter,
    provider: Annotated[str, Form(max_length=20)],
    config: Annotated[str, Form(max_length=20_000)] = "{}",
    enabled: Annotated[str | None, Form(max_length=5)] = None,
    secret_name: Annotated[list[str] | None, Form()] = None,
    secret_variable: Annotated[list[str] | None, Form()] = None,
    events: Annotated[list[str] | None, Form()] = None,
) -> HTMLResponse:
    refs = {
        name: variable.strip()
        for name, variable in zip(secret_name or [], secret_variable or [], strict=False)
        if variable.strip()
    }
    body = build(
        ChannelIn,
        provider=provider,
        enabled=enabled == "on",
        config=_config(config),
        secret_refs=refs,
        events=events or None,
    )
    saved = api.put_channel(channel, body, caller)
    return page(request, caller, "partials/channel_card.html", _card(saved, saved=True))


@router.post("/settings/notifications/channels/{channel}/test", response_class=HTMLResponse)
def send_test(
    channel: ChannelName,
    request: Request,
    caller: SettingsWriter,
    address: Annotated[str | None, Form(max_length=200)] = None,
    language: Annotated[str | None, Form(max_length=5)] = None,
) -> HTMLResponse:
    body = build(TestMessageIn, address=blank_to_none(address), language=blank_to_none(language))
    sent = api.send_test_message(channel, body, caller)
    log = "/notifications?" + urlencode({"channel": channel, "event": "channel_test"})
    context = {"item": sent.model_dump(), "log": log}
    return page(request, caller, "partials/test_message.html", context)


@router.post("/settings/notifications/quiet-hours", response_class=HTMLResponse)
def save_quiet_hours(
    request: Request,
    caller: SettingsWriter,
    start: Annotated[str | None, Form(max_length=5)] = None,
    end: Annotated[str | None, Form(max_length=5)] = None,
    clear: Annotated[str | None, Form(max_length=5)] = None,
) -> HTMLResponse:
    body = (
        QuietHoursIn(start=None, end=None)
        if clear
        else build(QuietHoursIn, start=blank_to_none(start), end=blank_to_none(end))
    )
    quiet = api.put_quiet_hours(body, caller)
    return page(request, caller, "partials/quiet_hours.html", {"quiet": quiet, "saved": True})
