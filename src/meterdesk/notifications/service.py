"""Queueing notifications inside the caller's transaction, and reading them back for operators.

:func:`enqueue_in` is what the control loop, the cashier and the device layer call, with the
connection of the transaction that changed things (a deduction batch, a recharge, a command
timeout): the outbox rows commit with the change or not at all. It resolves who hears about the
event on which channel, snapshots the params (plus names the templates need), and renders
nothing — the dispatcher renders at delivery.

Channel choice: the organisation's enabled channels that subscribe to the event. A caller's
``channels`` (e.g. an alarm level's "sms, voice") restricts the channels that reach a person;
the system channels (webhook, log) get every event they subscribe to. Customer events go to the
customer's phone / e-mail / openid / app (customers without that address are skipped); operator
events go to the channel's ``operator_addresses``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from meterdesk.audit import service as audit
from meterdesk.db import commit_signals
from meterdesk.db.database import Database
from meterdesk.notifications import model, recipients
from meterdesk.notifications.configuration import ChannelSetting, channel_settings, quiet_hours_of
from meterdesk.notifications.model import Channel, EventKind, Status
from meterdesk.notifications.tables import notification_log, notification_outbox
from meterdesk.shared.errors import ConflictError, NotFoundError, ValidationError
from meterdesk.shared.time import require_utc, zone


def enqueue_in(
    conn: Connection,
    *,
    organisation_id: int,
    event: str,
    key: str,
    params: Mapping[str, Any],
    at: datetime,
    account_id: int | None = None,
    customer_id: int | None = None,
    site_id: int | None = None,
    channels: Sequence[str] | None = None,
    language: str | None = None,
) -> list[int]:
    """Queue ``event`` for everyone who should hear about it, in the caller's transaction.

    ``key`` identifies this occurrence of the event (a transfer id, "control:<account>:<version>
    :alarm:1:0", ...): calling again with the same key queues nothing new. ``channels`` limits
    the person channels (unknown names are ignored); ``language`` (``zh-CN`` or ``en``) forces
    the language, else a customer event is written in the customer's own language and an
    operator event in zh-CN; the zone for quiet hours and local times is ``site_id``'s when given, else the
    site of the account's room, else the organisation's. Returns the ids of the rows written now (empty when
    nothing is subscribed, or on a repeat).
    """
    kind = model.event_kind(event)
    when = require_utc(at, field="at")
    chosen = _chosen(channel_settings(conn, organisation_id), kind, channels)
    if not chosen:
        return []
    context = recipients.context(conn, organisation_id, account_id, customer_id, site_id)
    quiet = quiet_hours_of(conn, [organisation_id]).get(organisation_id)
    row = {
        **outbox_row(kind, key, {**context.params, "at": when.isoformat(), **params}, when),
        "organisation_id": organisation_id,
        "account_id": account_id,
        "language": recipients.language_for(kind, context, language),
        "timezone": context.timezone,
        "next_attempt_at": model.release_at(
            model.urgency_of(kind), quiet, when, zone(context.timezone)
        ),
    }
    written = []
    for setting in chosen:
        for address, recipient_id in recipients.recipients(setting, kind, context):
            found = insert_outbox_row(conn, row, setting.channel, address, recipient_id)
            if found is not None:
                written.append(found)
    return written


def outbox_row(
    kind: EventKind, key: str, params: Mapping[str, Any], when: datetime
) -> dict[str, Any]:
    return {
        "event_kind": kind.value,
        "event_key": key,
        "template_key": model.template_key(kind),
        "params": json.dumps(params, ensure_ascii=False, sort_keys=True, default=_json_value),
        "urgency": model.urgency_of(kind).value,
        "status": Status.PENDING.value,
        "attempts": 0,
        "created_at": when,
    }


def enqueue(db: Database, **arguments: Any) -> list[int]:
    """:func:`enqueue_in` in a transaction of its own (operator notices, tests)."""
    with db.transaction() as conn:
        return enqueue_in(conn, at=arguments.pop("at", None) or db.clock(), **arguments)


def _chosen(
    settings: Sequence[ChannelSetting], kind: EventKind, channels: Sequence[str] | None
) -> list[ChannelSetting]:
    # Lenient on purpose: a typo in an alarm plan's channel list must not fail the deduction
    # batch this runs in; unknown names simply match nothing.
    allowed = None if channels is None else {c for c in Channel if c.value in channels}
    return [
        setting
        for setting in settings
        if setting.enabled
        and setting.subscribed(kind)
        and (
            allowed is None
            or setting.channel in model.SYSTEM_CHANNELS
            or setting.channel in allowed
        )
    ]


def insert_outbox_row(
    conn: Connection, row: Mapping[str, Any], channel: Channel, address: str, customer: int | None
) -> int | None:
    dedupe = model.dedupe_key(
        organisation_id=row["organisation_id"],
        event=EventKind(row["event_kind"]),
        event_key=row["event_key"],
        recipient=model.recipient_key(customer_id=customer, address=address),
        channel=channel,
    )
    builder = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = (
        builder(notification_outbox)
        .values(
            **row, channel=channel.value, address=address, customer_id=customer, dedupe_key=dedupe
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(notification_outbox.c.id)
    )
    found = conn.execute(statement).scalar_one_or_none()
    if found is None:
        return None
    commit_signals.announce(conn, commit_signals.NOTIFICATIONS)  # the dispatcher starts at commit
    return int(found)


def _json_value(value: object) -> str:
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, datetime):
        return require_utc(value).isoformat()
    raise ValidationError(f"notification params: cannot store {type(value).__name__} {value!r}")


# --- reading and retrying, for operators -------------------------------------------------------

_LISTED = (
    "id",
    "event_kind",
    "event_key",
    "customer_id",
    "account_id",
    "channel",
    "address",
    "language",
    "template_key",
    "urgency",
    "status",
    "attempts",
    "next_attempt_at",
    "last_error",
    "provider_message_id",
    "created_at",
    "sent_at",
)


@dataclass(frozen=True)
class NotificationFilter:
    """Which messages an operator wants to see; None matches everything."""

    status: str | None = None
    channel: str | None = None
    event: str | None = None
    customer_id: int | None = None
    account_id: int | None = None
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before


def _conditions(organisation_id: int, where: NotificationFilter) -> list[Any]:
    table = notification_outbox
    conditions = [table.c.organisation_id == organisation_id]
    if where.status is not None:
        conditions.append(table.c.status == model.status(where.status).value)
    if where.channel is not None:
        conditions.append(table.c.channel == model.channel(where.channel).value)
    if where.event is not None:
        conditions.append(table.c.event_kind == model.event_kind(where.event).value)
    for column, value in (
        (table.c.customer_id, where.customer_id),
        (table.c.account_id, where.account_id),
    ):
        if value is not None:
            conditions.append(column == value)
    if where.since is not None:
        conditions.append(table.c.created_at >= require_utc(where.since, field="since"))
    if where.until is not None:
        conditions.append(table.c.created_at < require_utc(where.until, field="until"))
    return conditions


def list_notifications(
    db: Database,
    *,
    organisation_id: int,
    status: str | None = None,
    channel: str | None = None,
    event: str | None = None,
    customer_id: int | None = None,
    account_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Newest first; page with ``before_id`` (the last id of the previous page)."""
    table = notification_outbox
    where = NotificationFilter(status, channel, event, customer_id, account_id, since, until)
    conditions = _conditions(organisation_id, where)
    if before_id is not None:
        conditions.append(table.c.id < before_id)
    query = (
        select(*(table.c[name] for name in _LISTED), table.c.params)
        .where(and_(*conditions))
        .order_by(table.c.id.desc())
        .limit(max(1, min(limit, 1000)))
    )
    with db.read() as conn:
        rows = conn.execute(query).mappings().all()
    return [{**row, "params": json.loads(row["params"])} for row in rows]


def get_notification(db: Database, *, organisation_id: int, outbox_id: int) -> dict[str, Any]:
    """One message of the organisation, as listed (NotFoundError for another's)."""
    table = notification_outbox
    query = select(*(table.c[name] for name in _LISTED), table.c.params).where(
        table.c.id == outbox_id, table.c.organisation_id == organisation_id
    )
    with db.read() as conn:
        row = conn.execute(query).mappings().one_or_none()
    if row is None:
        raise NotFoundError(f"notification {outbox_id} not found")
    return {**row, "params": json.loads(row["params"])}


def notification_attempts(
    db: Database, *, organisation_id: int, outbox_id: int
) -> list[dict[str, Any]]:
    """Every delivery attempt of one message, oldest first (the notification log)."""
    table = notification_log
    with db.read() as conn:
        _require(conn, organisation_id, outbox_id)
        rows = conn.execute(
            select(table).where(table.c.outbox_id == outbox_id).order_by(table.c.id)
        ).mappings()
        return [dict(row) for row in rows]


def status_counts(db: Database, *, organisation_id: int) -> dict[str, int]:
    table = notification_outbox
    with db.read() as conn:
        rows = conn.execute(
            select(table.c.status, func.count())
            .where(table.c.organisation_id == organisation_id)
            .group_by(table.c.status)
        ).all()
    return {str(status): int(count) for status, count in rows}


def retry_notification(db: Database, *, organisation_id: int, outbox_id: int, actor: str) -> None:
    """Send a failed or suppressed message again now (e.g. after fixing a template or a
    setting); attempts start over."""
    table = notification_outbox
    with db.transaction() as conn:
        status = _require(conn, organisation_id, outbox_id)
        if status not in (Status.FAILED, Status.SUPPRESSED):
            raise ConflictError(
                f"notification {outbox_id} is {status}, only failed or suppressed ones are retried"
            )
        conn.execute(
            update(table)
            .where(table.c.id == outbox_id)
            .values(status=Status.PENDING.value, attempts=0, next_attempt_at=db.clock())
        )
        commit_signals.announce(conn, commit_signals.NOTIFICATIONS)
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="notifications.retry",
            subject=f"notification:{outbox_id}",
            at=db.clock(),
            detail={"was": status.value},
        )


def _require(conn: Connection, organisation_id: int, outbox_id: int) -> Status:
    found = conn.execute(
        select(notification_outbox.c.status).where(
            notification_outbox.c.id == outbox_id,
            notification_outbox.c.organisation_id == organisation_id,
        )
    ).scalar_one_or_none()
    if found is None:
        raise NotFoundError(f"notification {outbox_id} not found")
    return Status(found)
