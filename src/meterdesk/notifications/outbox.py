"""The dispatcher's side of the outbox table: claim due rows, record what became of them.

Claiming is one statement: ``UPDATE … SET status='sending', attempts=attempts+1,
next_attempt_at=now+lease WHERE id IN (SELECT id … WHERE due ORDER BY next_attempt_at LIMIT n
FOR UPDATE SKIP LOCKED) RETURNING …``. On PostgreSQL, ``SKIP LOCKED`` lets several workers claim
side by side without waiting for or taking each other's rows; SQLite ignores the locking clause
and serialises writers (``BEGIN IMMEDIATE``), which suits its single worker. A row whose claim
expired (the worker died mid-send) is due again: delivery is at least once. An expired claim
that was already the last attempt is failed instead (:func:`give_up_abandoned`): a message that
takes the worker down every time would otherwise stay in ``sending`` for ever, unseen.

Recording an outcome only touches the row if it is still the same claim (``status='sending'``
and the attempt number the worker claimed), so a worker that overran its lease cannot overwrite
a newer attempt's result. Every outcome is also written to ``notification_log``.

A cancelled system notice's messages are ``cancelled``, which the claim never takes. One
claimed before the cancel and coming back unsent (a retry, the quiet hours, a claim running
out) becomes ``cancelled`` instead of ``pending`` (:func:`record`): it is not tried again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, insert, or_, select, update

from meterdesk.notifications import notice_model
from meterdesk.notifications.model import EventKind, Status, Urgency
from meterdesk.notifications.tables import notices, notification_log, notification_outbox

_T = notification_outbox


@dataclass(frozen=True)
class Claimed:
    id: int
    organisation_id: int
    event_kind: str
    event_key: str
    channel: str
    address: str
    language: str
    timezone: str
    template_key: str
    params: Mapping[str, Any]
    urgency: Urgency
    attempts: int
    created_at: datetime


@dataclass(frozen=True)
class Outcome:
    """What became of one attempt. ``result`` is the log's word for it."""

    result: str  # sent | retry | failed | deferred | suppressed
    error: str | None = None
    provider_message_id: str | None = None
    detail: str | None = None
    next_attempt_at: datetime | None = None  # retry and deferred


def claim_due(conn: Connection, *, now: datetime, limit: int, lease: timedelta) -> list[Claimed]:
    due = (
        select(_T.c.id)
        .where(
            or_(_T.c.status == Status.PENDING.value, _T.c.status == Status.SENDING.value),
            _T.c.next_attempt_at <= now,
        )
        .order_by(_T.c.next_attempt_at, _T.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(_T)
        .where(_T.c.id.in_(due.scalar_subquery()))
        .values(
            status=Status.SENDING.value, attempts=_T.c.attempts + 1, next_attempt_at=now + lease
        )
        .returning(
            _T.c.id,
            _T.c.organisation_id,
            _T.c.event_kind,
            _T.c.event_key,
            _T.c.channel,
            _T.c.address,
            _T.c.language,
            _T.c.timezone,
            _T.c.template_key,
            _T.c.params,
            _T.c.urgency,
            _T.c.attempts,
            _T.c.created_at,
        )
    )
    rows = conn.execute(statement).mappings().all()
    claimed = [
        Claimed(**{**row, "params": json.loads(row["params"]), "urgency": Urgency(row["urgency"])})
        for row in rows
    ]
    return sorted(claimed, key=lambda item: item.id)


def give_up_abandoned(conn: Connection, *, now: datetime, max_attempts: int) -> int:
    """Fail the expired claims that used the last attempt, with a log line each; how many.

    Without this the attempt counter grew with every crash, and only an attempt that *returned*
    looked at it: a message that crashes its worker each time was claimed again for ever."""
    abandoned = conn.execute(
        select(_T.c.id, _T.c.organisation_id, _T.c.channel, _T.c.attempts)
        .where(
            _T.c.status == Status.SENDING.value,
            _T.c.next_attempt_at <= now,
            _T.c.attempts >= max_attempts,
        )
        .with_for_update(skip_locked=True)
    ).all()
    for row in abandoned:
        reason = (
            f"gave up after {row.attempts} attempts: the worker stopped (crashed or was "
            f"killed) before it could record the last one"
        )
        conn.execute(
            update(_T)
            .where(_T.c.id == row.id)
            .values(status=Status.FAILED.value, last_error=reason)
        )
        conn.execute(
            insert(notification_log).values(
                outbox_id=row.id,
                organisation_id=row.organisation_id,
                attempt=row.attempts,
                at=now,
                channel=row.channel,
                result="failed",
                error=reason,
            )
        )
    return len(abandoned)


_STATUS_FOR = {
    "sent": Status.SENT,
    "retry": Status.PENDING,
    "deferred": Status.PENDING,
    "failed": Status.FAILED,
    "suppressed": Status.SUPPRESSED,
}


def record(conn: Connection, claimed: Claimed, outcome: Outcome, *, now: datetime) -> bool:
    """Store the outcome; False when the claim had been lost (the log still gets the line)."""
    values: dict[str, Any] = {"status": _STATUS_FOR[outcome.result].value}
    error = outcome.error
    if (
        _STATUS_FOR[outcome.result] is Status.PENDING
        and claimed.event_kind == EventKind.SYSTEM_NOTICE.value
        and notice_cancelled(conn, claimed.organisation_id, claimed.event_key)
    ):
        # Claimed before its notice was cancelled and not sent: it is not tried again.
        reason = notice_model.cancelled_reason(notice_model.notice_of(claimed.event_key))
        values["status"] = Status.CANCELLED.value
        error = f"{outcome.error}; {reason}" if outcome.error else reason
    if outcome.result == "sent":
        values.update(sent_at=now, provider_message_id=outcome.provider_message_id, last_error=None)
    else:
        values["last_error"] = error
    if outcome.next_attempt_at is not None:
        values["next_attempt_at"] = outcome.next_attempt_at
    if outcome.result == "deferred":
        values["attempts"] = claimed.attempts - 1  # waiting for quiet hours is not an attempt
    changed = conn.execute(
        update(_T)
        .where(
            and_(
                _T.c.id == claimed.id,
                _T.c.status == Status.SENDING.value,
                _T.c.attempts == claimed.attempts,
            )
        )
        .values(**values)
    ).rowcount
    conn.execute(
        insert(notification_log).values(
            outbox_id=claimed.id,
            organisation_id=claimed.organisation_id,
            attempt=claimed.attempts,
            at=now,
            channel=claimed.channel,
            result=outcome.result,
            error=error if changed else f"claim lost; {error or outcome.result}",
            provider_message_id=outcome.provider_message_id,
            detail=outcome.detail,
        )
    )
    return bool(changed)


def notice_cancelled(conn: Connection, organisation_id: int, event_key: str) -> bool:
    """Whether the notice of a ``system_notice`` message (by its event key) has been cancelled,
    read under a shared lock on the notice: a cancel in progress is waited for, and one that
    starts later waits for the caller's transaction (whose ``pending`` it then sees and stops).
    The dispatcher putting a claimed message back and an operator's retry both ask it."""
    found = conn.execute(
        select(notices.c.cancelled_at)
        .where(
            notices.c.id == notice_model.notice_of(event_key),
            notices.c.organisation_id == organisation_id,
        )
        .with_for_update(read=True)
    ).one_or_none()
    return found is not None and found.cancelled_at is not None
