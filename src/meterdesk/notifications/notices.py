"""System notices (系统通知 / 公告): an operator tells the tenants of a scope something ("B 栋 12 月
9 日 9:00–12:00 停水检修", "电价调整通知").

A notice is one row in ``notices`` and one ``system_notice`` message per recipient and channel
in the outbox, all written in ONE transaction (one queueing request per open account in scope,
queued as one batch): either the notice exists with every message, or nothing does. The
outbox's dedupe key (organisation, event, ``notice:<id>:customer:<customer>``, recipient,
channel) makes a tenant with several rooms in scope hear once per channel; the webhook and log
get one message per tenant, as for every customer event.

A repeat with the same idempotency key answers the first notice and queues nothing (a double
click must not text 300 tenants twice); the same key with another notice is refused. Delivery
counts per notice are read from its outbox rows by event kind and key range.

A scheduled notice (``send_at``) writes the same rows at once, due at that instant (normal ones
at the end of the quiet hours holding then): the dispatcher claims only due rows. Cancelling a
notice (:func:`cancel_notice`) turns its ``pending`` messages ``cancelled`` in one transaction
with the notice's ``cancelled_at`` and the audit entry. A message a dispatcher had claimed
(``sending``) or sent is not recalled, and is reported as gone; should a claimed one come back
unsent (a retry, the quiet hours), the dispatcher cancels it then (``outbox.record``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from meterdesk.audit import service as audit
from meterdesk.db.database import Database
from meterdesk.notifications import notice_model, notice_scope, queueing
from meterdesk.notifications.model import EventKind, Status, Urgency
from meterdesk.notifications.notice_model import NoticeRequest, Scope, ScopeKind
from meterdesk.notifications.tables import notices, notification_outbox
from meterdesk.shared.errors import (
    ConflictError,
    IdempotencyConflictError,
    NotFoundError,
    ValidationError,
)
from meterdesk.shared.time import zone
from meterdesk.sites.tables import buildings, floors, organisations, rooms, sites

KEY_CONFLICT = "this idempotency key was already used for a different notice"


def send_notice(
    db: Database, *, organisation_id: int, request: NoticeRequest, key: str, actor: str
) -> tuple[dict[str, Any], bool]:
    """Send ``request`` to the tenants of its scope: (the notice with its delivery counts,
    whether it was a repeat of an earlier send with this key)."""
    key = notice_model.idempotency_key(key)
    try:
        with db.transaction() as conn:
            earlier = _replay(conn, organisation_id, key, request)
            found = earlier or _send_in(conn, db, organisation_id, request, key, actor)
    except IntegrityError:
        # The same key sent at the same moment (two clicks, two servers): the first committed
        # while this one wrote; it answers the first (or refuses another notice under its key).
        with db.read() as conn:
            earlier = _replay(conn, organisation_id, key, request)
        if earlier is None:
            raise
        found = earlier
    return get_notice(db, organisation_id=organisation_id, notice_id=found), earlier is not None


def _replay(conn: Connection, organisation_id: int, key: str, request: NoticeRequest) -> int | None:
    row = conn.execute(
        select(notices.c.id, notices.c.request_hash).where(
            notices.c.organisation_id == organisation_id, notices.c.idempotency_key == key
        )
    ).one_or_none()
    if row is None:
        return None
    if row.request_hash != request.request_hash():
        raise IdempotencyConflictError(KEY_CONFLICT)
    return int(row.id)


def _send_in(
    conn: Connection,
    db: Database,
    organisation_id: int,
    request: NoticeRequest,
    key: str,
    actor: str,
) -> int:
    reached = notice_scope.open_accounts(conn, organisation_id, request.scope)
    if not reached:
        raise ConflictError(
            f"no open account in this {request.scope.kind.value}: nobody to send the notice to"
        )
    at = db.clock()
    send_at = None if request.send_at is None else notice_model.check_send_at(request.send_at, at)
    recipients = len({r.customer_id for r in reached})  # a tenant with several rooms: once
    channels = None if request.channels is None else [c.value for c in request.channels]
    notice_id = conn.execute(
        insert(notices)
        .values(
            organisation_id=organisation_id,
            scope_kind=request.scope.kind.value,
            scope_ids=json.dumps(list(request.scope.ids)),
            subject=request.subject,
            text=request.text,
            urgent=request.urgent,
            channels=None if channels is None else json.dumps(channels),
            idempotency_key=key,
            request_hash=request.request_hash(),
            recipient_count=recipients,
            created_by=actor,
            created_at=at,
            send_at=send_at,
        )
        .returning(notices.c.id)
    ).scalar_one()
    params = {"subject": request.subject, "text": request.text}
    urgency = Urgency.URGENT if request.urgent else None
    batch = [
        queueing.NewNotification(
            organisation_id,
            EventKind.SYSTEM_NOTICE.value,
            notice_model.event_key(int(notice_id), r.customer_id),
            params,
            account_id=r.account_id,
            channels=channels,
            urgency=urgency,
        )
        for r in reached
    ]
    queued = queueing.enqueue_many_in(conn, batch, at, not_before=send_at)
    audit.record(
        conn,
        organisation_id=organisation_id,
        actor=actor,
        action="notices.send",
        subject=f"notice:{notice_id}",
        at=at,
        detail={
            "scope": request.scope.kind.value,
            "ids": list(request.scope.ids),
            "subject": request.subject,
            "urgent": request.urgent,
            "send_at": None if send_at is None else send_at.isoformat(),
            "recipients": recipients,
            "messages": len(queued),
            "idempotency_key": key,
        },
    )
    return int(notice_id)


_STATUSES = tuple(Status)
GONE = (Status.SENDING, Status.SENT)  # claimed by a dispatcher or sent: not recalled


def cancel_notice(
    db: Database, *, organisation_id: int, notice_id: int, actor: str
) -> tuple[dict[str, Any], bool]:
    """Stop every message of the notice that has not gone out: (the notice with its delivery
    counts, ``stopped`` and ``gone``; whether it had been cancelled before — then nothing
    changes and the answer is the same). NotFoundError for another organisation's notice."""
    table = notification_outbox
    with db.transaction() as conn:
        # Locked: a second cancel at once waits and sees this one's cancelled_at; a retry of one
        # of its messages (service.retry_notification) and a dispatcher putting a claimed one
        # back (outbox.record) read it under the same lock.
        row = conn.execute(
            select(notices.c.cancelled_at)
            .where(notices.c.id == notice_id, notices.c.organisation_id == organisation_id)
            .with_for_update()
        ).one_or_none()
        if row is None:
            raise NotFoundError(f"notice {notice_id} not found")
        before = row.cancelled_at is not None
        if not before:
            at = db.clock()
            low, high = notice_model.event_key_range(notice_id)
            stopped = conn.execute(
                update(table)
                .where(
                    table.c.event_kind == EventKind.SYSTEM_NOTICE.value,
                    table.c.event_key >= low,
                    table.c.event_key < high,
                    table.c.organisation_id == organisation_id,
                    # Only what no dispatcher holds: a claimed row ('sending') may be on its way.
                    table.c.status == Status.PENDING.value,
                )
                .values(
                    status=Status.CANCELLED.value,
                    last_error=notice_model.cancelled_reason(notice_id),
                )
            ).rowcount
            conn.execute(
                update(notices)
                .where(notices.c.id == notice_id)
                .values(cancelled_at=at, cancelled_by=actor)
            )
            counts = delivery_counts(conn, organisation_id, [notice_id])[notice_id]
            audit.record(
                conn,
                organisation_id=organisation_id,
                actor=actor,
                action="notices.cancel",
                subject=f"notice:{notice_id}",
                at=at,
                detail={"stopped": int(stopped), "gone": sum(counts[s.value] for s in GONE)},
            )
    found = get_notice(db, organisation_id=organisation_id, notice_id=notice_id)
    return found, before


def scope_zone(db: Database, organisation_id: int, scope: Scope) -> ZoneInfo:
    """The zone a scheduled time without an offset is read in: the site's of a site, building,
    floor or rooms (rooms of sites in different zones: ValidationError, give an offset), the
    organisation's for the whole organisation. NotFoundError for another's place."""
    with db.read() as conn:
        notice_scope.require_places(conn, organisation_id, scope)
        if scope.kind is ScopeKind.ORGANISATION:
            query = select(organisations.c.timezone).where(organisations.c.id == organisation_id)
        elif scope.kind is ScopeKind.SITE:
            query = select(sites.c.timezone).where(sites.c.id.in_(scope.ids))
        else:
            query = select(sites.c.timezone).join(buildings, buildings.c.site_id == sites.c.id)
            if scope.kind is ScopeKind.BUILDING:
                query = query.where(buildings.c.id.in_(scope.ids))
            else:
                query = query.join(floors, floors.c.building_id == buildings.c.id)
                if scope.kind is ScopeKind.FLOOR:
                    query = query.where(floors.c.id.in_(scope.ids))
                else:
                    query = query.join(rooms, rooms.c.floor_id == floors.c.id).where(
                        rooms.c.id.in_(scope.ids)
                    )
        names = sorted({str(name) for name in conn.execute(query.distinct()).scalars()})
    if len(names) != 1:
        raise ValidationError(
            f"send at: these rooms are in sites of different time zones ({', '.join(names)}): "
            "give the time with its offset, like 2026-12-09T08:00+08:00"
        )
    return zone(names[0])


def delivery_counts(
    conn: Connection, organisation_id: int, notice_ids: Sequence[int]
) -> dict[int, dict[str, int]]:
    """Per notice, how many of its messages are in each status (every status, 0 when none)."""
    counts = {n: {s.value: 0 for s in _STATUSES} for n in notice_ids}
    if not notice_ids:
        return counts
    table = notification_outbox
    ranges = [notice_model.event_key_range(n) for n in notice_ids]
    rows = conn.execute(
        select(table.c.event_key, table.c.status, func.count())
        .where(
            table.c.event_kind == EventKind.SYSTEM_NOTICE.value,
            or_(
                *(and_(table.c.event_key >= low, table.c.event_key < high) for low, high in ranges)
            ),
            table.c.organisation_id == organisation_id,
        )
        .group_by(table.c.event_key, table.c.status)
    ).all()
    # One row per customer and status: summed here, the notice id read back from the key.
    for event_key, status, count in rows:
        found = counts.get(notice_model.notice_of(str(event_key)))
        if found is not None:
            found[str(status)] += int(count)
    return counts


_COLUMNS = (
    notices.c.id,
    notices.c.scope_kind,
    notices.c.scope_ids,
    notices.c.subject,
    notices.c.text,
    notices.c.urgent,
    notices.c.channels,
    notices.c.recipient_count,
    notices.c.created_by,
    notices.c.created_at,
    notices.c.send_at,
    notices.c.cancelled_at,
    notices.c.cancelled_by,
)


def _shown(row: Any, counts: dict[str, int]) -> dict[str, Any]:
    found = dict(row)
    found["scope_ids"] = json.loads(found["scope_ids"])
    found["channels"] = None if found["channels"] is None else json.loads(found["channels"])
    found["urgent"] = bool(found["urgent"])
    return {
        **found,
        "delivery": counts,
        # What a cancel answers: how many messages it stopped, how many had gone before it.
        "stopped": counts[Status.CANCELLED.value],
        "gone": sum(counts[s.value] for s in GONE),
    }


def get_notice(db: Database, *, organisation_id: int, notice_id: int) -> dict[str, Any]:
    """One notice of the organisation with its delivery counts (NotFoundError for another's)."""
    with db.read() as conn:
        row = (
            conn.execute(
                select(*_COLUMNS).where(
                    notices.c.id == notice_id, notices.c.organisation_id == organisation_id
                )
            )
            .mappings()
            .one_or_none()
        )
        if row is None:
            raise NotFoundError(f"notice {notice_id} not found")
        return _shown(row, delivery_counts(conn, organisation_id, [notice_id])[notice_id])


def list_notices(
    db: Database, *, organisation_id: int, before_id: int | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Newest first, each with its delivery counts; page with ``before_id`` (the last id of
    the previous page)."""
    conditions = [notices.c.organisation_id == organisation_id]
    if before_id is not None:
        conditions.append(notices.c.id < before_id)
    with db.read() as conn:
        rows = (
            conn.execute(
                select(*_COLUMNS)
                .where(*conditions)
                .order_by(notices.c.id.desc())
                .limit(max(1, min(limit, 1000)))
            )
            .mappings()
            .all()
        )
        counts = delivery_counts(conn, organisation_id, [int(r["id"]) for r in rows])
    return [_shown(row, counts[int(row["id"])]) for row in rows]
