"""Reading queued notifications back for operators, and sending a failed one again.

Queueing is :mod:`meterdesk.notifications.queueing`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, or_, select, update

from meterdesk.audit import service as audit
from meterdesk.db import commit_signals
from meterdesk.db.database import Database
from meterdesk.notifications import model, notice_model, outbox, recipients
from meterdesk.notifications.model import Status
from meterdesk.notifications.tables import notification_log, notification_outbox
from meterdesk.shared.errors import ConflictError, NotFoundError, ValidationError
from meterdesk.shared.time import require_utc

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
    if where.customer_id is None and where.account_id is None:
        conditions = [table.c.organisation_id == organisation_id]
    else:
        # "+ 0" keeps SQLite off (organisation, id): a customer's or account's messages are a
        # few among the organisation's, found through their own index, not by walking the
        # organisation's whole outbox from its newest message.
        conditions = [table.c.organisation_id + 0 == organisation_id]
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
    """Newest first; page with ``before_id`` (the last id of the previous page).

    Without ``since``/``until``: by id, read down (organisation, id). With either: by the time
    queued, then id, read down (organisation, created at, id) from the end of the range (in id
    order every page sorted the whole range). Ids and times are not strictly in step across
    writers, so such a page goes on after ``before_id``'s own (created at, id), not below its
    id; a ValidationError when the organisation has no message ``before_id``.
    """
    table = notification_outbox
    timed = since is not None or until is not None
    order = (table.c.created_at.desc(), table.c.id.desc()) if timed else (table.c.id.desc(),)
    with db.read() as conn:
        after: list[ColumnElement[bool]] = []
        if before_id is not None and timed:
            at, after = _listed_after(conn, organisation_id, before_id)
            # A next page ends at its cursor's message, not at ``until``: with both, SQLite
            # may take ``until`` as the end of its index range and walk every earlier page.
            if until is not None and at < require_utc(until, field="until"):
                until = None
        elif before_id is not None:
            after = [table.c.id < before_id]
        where = NotificationFilter(status, channel, event, customer_id, account_id, since, until)
        conditions = [*_conditions(organisation_id, where), *after]
        query = (
            select(*(table.c[name] for name in _LISTED), table.c.params)
            .where(and_(*conditions))
            .order_by(*order)
            .limit(max(1, min(limit, 1000)))
        )
        rows = conn.execute(query).mappings().all()
    return [{**row, "params": json.loads(row["params"])} for row in rows]


def _listed_after(
    conn: Connection, organisation_id: int, outbox_id: int
) -> tuple[datetime, list[ColumnElement[bool]]]:
    """When ``outbox_id`` was queued, and the conditions for the messages after it in a
    time-bounded list: older by (created at, id)."""
    table = notification_outbox
    at = conn.execute(
        select(table.c.created_at).where(
            table.c.id == outbox_id, table.c.organisation_id == organisation_id
        )
    ).scalar_one_or_none()
    if at is None:
        raise ValidationError(f"no message {outbox_id} in this organisation's log to page from")
    # "created_at <= at" is the index range; the rest only decides the ties at that instant.
    return at, [table.c.created_at <= at, or_(table.c.created_at < at, table.c.id < outbox_id)]


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
    """Send a failed or suppressed message again now (e.g. after fixing a template, a setting or
    the tenant's address); attempts start over.

    A tenant's message on a person channel (SMS, voice, e-mail, WeChat, push) is addressed
    again from the customer's current data, as queueing would address it now: the phone added
    since a message nobody could get, or the number corrected after the provider refused the
    old one. When the customer now has no address on the channel, the retry is refused
    (ConflictError, with the reason) and nothing changes: a message that cannot be delivered is
    not queued again, and one the tenant's removed number would get is not sent to it.
    """
    table = notification_outbox
    with db.transaction() as conn:
        # Locked (FOR NO KEY UPDATE: log rows referencing it need not wait): a second retry at
        # once (a double click) must see this one's "pending", not the "failed" it read before,
        # or it puts back a row a dispatcher has claimed since (and it is sent twice).
        row = conn.execute(
            select(
                table.c.status,
                table.c.channel,
                table.c.address,
                table.c.customer_id,
                table.c.event_kind,
                table.c.event_key,
            )
            .where(table.c.id == outbox_id, table.c.organisation_id == organisation_id)
            .with_for_update(key_share=True)
        ).one_or_none()
        if row is None:
            raise NotFoundError(f"notification {outbox_id} not found")
        status = Status(row.status)
        if status not in (Status.FAILED, Status.SUPPRESSED):
            raise ConflictError(
                f"notification {outbox_id} is {status}, only failed or suppressed ones are retried"
            )
        if row.event_kind == model.EventKind.SYSTEM_NOTICE.value and outbox.notice_cancelled(
            conn, organisation_id, str(row.event_key)
        ):
            raise ConflictError(
                f"notification {outbox_id} belongs to notice "
                f"#{notice_model.notice_of(str(row.event_key))}, which was cancelled"
            )
        values: dict[str, Any] = {
            "status": Status.PENDING.value,
            "attempts": 0,
            "next_attempt_at": db.clock(),
        }
        detail = {"was": status.value}
        channel = model.channel(str(row.channel))
        if row.customer_id is not None and channel in model.PERSON_CHANNELS:
            address = _current_address(
                conn, organisation_id, outbox_id, int(row.customer_id), channel
            )
            if address != row.address:
                values["address"] = address
                detail["readdressed"] = model.ADDRESS_FIELD[channel]  # the field, not the address
        conn.execute(update(table).where(table.c.id == outbox_id).values(**values))
        commit_signals.announce(conn, commit_signals.NOTIFICATIONS)
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="notifications.retry",
            subject=f"notification:{outbox_id}",
            at=db.clock(),
            detail=detail,
        )


def _current_address(
    conn: Connection, organisation_id: int, outbox_id: int, customer_id: int, channel: model.Channel
) -> str:
    """The customer's address on the row's channel now (recipients' resolution), or a
    ConflictError saying what is still missing."""
    customer = recipients.context(conn, organisation_id, None, customer_id, None).customer
    assert customer is not None  # a customer id was given
    address = recipients.customer_address(channel, customer)
    if address is None:
        raise ConflictError(
            f"notification {outbox_id} cannot be sent again: "
            f"{recipients.no_address(channel, customer)} (add it to the customer first)"
        )
    return address


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
