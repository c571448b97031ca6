"""Queueing notifications inside the caller's transaction.

:func:`enqueue_in` is what the cashier and the device layer call, and :func:`enqueue_many_in`
what the control loop calls for a whole ingest batch, with the connection of the transaction
that changed things (a deduction batch, a recharge, a command timeout): the outbox rows commit
with the change or not at all. They resolve who hears about the event on which channel,
snapshot the params (plus names the templates need), and render nothing — the dispatcher renders
at delivery.

Channel choice: the organisation's enabled channels that subscribe to the event. A caller's
``channels`` (e.g. an alarm level's "sms, voice") restricts the channels that reach a person;
the system channels (webhook, log) get every event they subscribe to. Customer events go to the
customer's phone / e-mail / openid / app; a channel the customer has no address for is skipped,
but a customer reached on none of the chosen person channels gets a ``failed`` row per channel
with the reason (visible to operators, instead of a tenant who silently hears nothing). Operator
events go to the channel's ``operator_addresses``.

A batch costs a handful of statements whatever its size: the channel settings once per
organisation, quiet hours and each kind of recipient row (accounts, customers, rooms, ...) once,
and one multi-row insert — where queueing its messages one by one took several reads and an
insert per message (an ingest batch that warns or cuts hundreds of tenants).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from meterdesk.db import commit_signals
from meterdesk.db.database import Database
from meterdesk.notifications import model, recipients
from meterdesk.notifications.configuration import ChannelSetting, channel_settings, quiet_hours_of
from meterdesk.notifications.model import Channel, EventKind, QuietHours, Status, Urgency
from meterdesk.notifications.tables import notification_outbox
from meterdesk.shared.errors import ValidationError
from meterdesk.shared.time import require_utc, zone


@dataclass(frozen=True)
class NewNotification:
    """One event to queue: the keyword arguments of :func:`enqueue_in` but ``at``."""

    organisation_id: int
    event: str
    key: str
    params: Mapping[str, Any]
    account_id: int | None = None
    customer_id: int | None = None
    site_id: int | None = None
    channels: Sequence[str] | None = None
    language: str | None = None
    urgency: Urgency | None = None  # at least this urgent; None: the event's own urgency

    def context_key(self) -> recipients.ContextKey:
        return (self.organisation_id, self.account_id, self.customer_id, self.site_id)


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
    urgency: Urgency | None = None,
) -> list[int]:
    """Queue ``event`` for everyone who should hear about it, in the caller's transaction.

    ``key`` identifies this occurrence of the event (a transfer id, "control:<account>:<version>
    :alarm:1:0", ...): calling again with the same key queues nothing new. ``channels`` limits
    the person channels (unknown names are ignored); ``language`` (``zh-CN`` or ``en``) forces
    the language, else a customer event is written in the customer's own language and an
    operator event in zh-CN; the zone for quiet hours and local times is ``site_id``'s when
    given, else the site of the account's room, else the organisation's. ``urgency`` raises the
    event's urgency (``URGENT``: the message goes even inside quiet hours), never lowers it.
    Returns the ids of the rows written now (empty when nothing is subscribed, or on a repeat).
    """
    notification = NewNotification(
        organisation_id,
        event,
        key,
        params,
        account_id,
        customer_id,
        site_id,
        channels,
        language,
        urgency,
    )
    return enqueue_many_in(conn, [notification], at)


def enqueue_many_in(
    conn: Connection,
    notifications: Sequence[NewNotification],
    at: datetime,
    *,
    not_before: datetime | None = None,
) -> list[int]:
    """Queue ``notifications`` as :func:`enqueue_in` would one after the other — the same rows in
    the same order, the same de-duplication (also between two of them), the same error for the
    first that fails — but with the reads and the insert done once for the whole batch. Returns
    the ids of the rows written now, in order. On an error nothing of the batch is written.

    ``not_before`` (a scheduled notice's time) makes the messages due then rather than at
    ``at`` (and, for normal ones, at the end of the quiet hours that hold at that instant)."""
    found = _Lookups.read(conn, notifications)
    due = None if not_before is None else require_utc(not_before, field="not_before")
    rows = [row for notification in notifications for row in _rows(notification, at, found, due)]
    return insert_outbox_rows(conn, rows)


def enqueue(db: Database, **arguments: Any) -> list[int]:
    """:func:`enqueue_in` in a transaction of its own (operator notices, tests)."""
    with db.transaction() as conn:
        return enqueue_in(conn, at=arguments.pop("at", None) or db.clock(), **arguments)


_EVENT_NAMES = frozenset(kind.value for kind in EventKind)


@dataclass(frozen=True)
class _Lookups:
    """What a batch's rows are made of, read up front. Reading never fails here: an unknown
    event, organisation or account fails in :func:`_rows`, at the message that has it, as it
    would have one message at a time."""

    settings: Mapping[int, list[ChannelSetting]]  # per organisation of the batch
    quiet: Mapping[int, QuietHours]
    contexts: recipients.Contexts

    @classmethod
    def read(cls, conn: Connection, notifications: Sequence[NewNotification]) -> _Lookups:
        settings = {
            organisation_id: channel_settings(conn, organisation_id)
            for organisation_id in dict.fromkeys(n.organisation_id for n in notifications)
        }
        # Recipients and quiet hours only for messages that go out on some channel: most
        # organisations configure none, and then nothing but their settings is read.
        going = [
            notification
            for notification in notifications
            if notification.event in _EVENT_NAMES
            and _chosen(
                settings[notification.organisation_id],
                EventKind(notification.event),
                notification.channels,
            )
        ]
        quiet = quiet_hours_of(conn, [n.organisation_id for n in going]) if going else {}
        contexts = recipients.Contexts.read(conn, [n.context_key() for n in going])
        return cls(settings, quiet, contexts)


def _rows(
    notification: NewNotification,
    at: datetime,
    found: _Lookups,
    not_before: datetime | None = None,
) -> Iterator[dict[str, Any]]:
    """The outbox rows of one message, checked in the order :func:`enqueue_in` always has."""
    kind = model.event_kind(notification.event)
    when = require_utc(at, field="at")
    due = when if not_before is None else max(when, not_before)
    chosen = _chosen(found.settings[notification.organisation_id], kind, notification.channels)
    if not chosen:
        return
    context = found.contexts.of(notification.context_key())
    params = {**context.params, "at": when.isoformat(), **notification.params}
    urgency = model.urgency_for(kind, notification.urgency)
    row = {
        **outbox_row(kind, notification.key, params, when),
        "urgency": urgency.value,  # the dispatcher's quiet-hours rule reads it from the row
        "organisation_id": notification.organisation_id,
        "account_id": notification.account_id,
        "language": recipients.language_for(kind, context, notification.language),
        "timezone": context.timezone,
        "next_attempt_at": model.release_at(
            urgency,
            found.quiet.get(notification.organisation_id),
            due,
            zone(context.timezone),
        ),
    }
    reached, unreachable = False, []
    for setting in chosen:
        addresses = recipients.recipients(setting, kind, context)
        for address, recipient_id in addresses:
            yield addressed(row, setting.channel, address, recipient_id)
        reached = reached or (bool(addresses) and setting.channel in model.PERSON_CHANNELS)
        reason = recipients.missing_address(setting, kind, context)
        if reason is not None:
            unreachable.append((setting.channel, reason))
    if context.customer is not None and not reached:
        # Nobody can tell the tenant (no phone for the SMS, no e-mail, ...): a failed row per
        # chosen channel, so operators see it, instead of a message that silently never was.
        for which, reason in unreachable:
            failed = {**row, "status": Status.FAILED.value, "last_error": reason}
            yield addressed(failed, which, "", int(context.customer["id"]))


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
        "last_error": None,  # every row of a multi-row insert names the same columns
        "created_at": when,
    }


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


def addressed(
    row: Mapping[str, Any], channel: Channel, address: str, customer: int | None
) -> dict[str, Any]:
    """``row`` (an :func:`outbox_row` with its organisation, account, language, zone and due
    time) for one recipient on one channel, with the key that makes a repeat a no-op."""
    dedupe = model.dedupe_key(
        organisation_id=row["organisation_id"],
        event=EventKind(row["event_kind"]),
        event_key=row["event_key"],
        recipient=model.recipient_key(customer_id=customer, address=address),
        channel=channel,
    )
    return {
        **row,
        "channel": channel.value,
        "address": address,
        "customer_id": customer,
        "dedupe_key": dedupe,
    }


def insert_outbox_row(
    conn: Connection, row: Mapping[str, Any], channel: Channel, address: str, customer: int | None
) -> int | None:
    """One message (a channel test); its id, or None when its key was queued before."""
    written = insert_outbox_rows(conn, [addressed(row, channel, address, customer)])
    return written[0] if written else None


def insert_outbox_rows(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Insert :func:`addressed` rows whose dedupe key is new, in order; their ids, in order."""
    first: dict[str, Mapping[str, Any]] = {}
    for row in rows:  # a key twice in the batch: the first wins, as one at a time
        first.setdefault(row["dedupe_key"], row)
    if not first:
        return []
    builder = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    table = notification_outbox
    statement = (
        builder(table)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(table.c.id, table.c.dedupe_key)
    )
    # One multi-row INSERT (SQLAlchemy's "insertmanyvalues" turns this executemany into
    # INSERT ... VALUES (...), (...) RETURNING). Rows already queued come back as nothing, and
    # the order of what does come back is not promised, so ids are matched by dedupe key.
    written = {str(key): int(found) for found, key in conn.execute(statement, list(first.values()))}
    if not written:
        return []
    commit_signals.announce(conn, commit_signals.NOTIFICATIONS)  # the dispatcher starts at commit
    return [written[key] for key in first if key in written]


def _json_value(value: object) -> str:
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, datetime):
        return require_utc(value).isoformat()
    raise ValidationError(f"notification params: cannot store {type(value).__name__} {value!r}")
