"""Writing device commands: the insert of a new command, the lock on its meter that orders
command creation, and every status change.

Every status change is a conditional update (``WHERE status IN ('pending', 'sent')``), so a
finished command never changes again and a result that arrives after an operator cancelled the
command is logged, not applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, insert, literal, select, update

from meterdesk.db import commit_signals
from meterdesk.db.types import Instant
from meterdesk.devices.commands.event_log import add_event
from meterdesk.devices.commands.model import (
    OPEN_STATUSES,
    Command,
    CommandSpec,
    CommandStatus,
    clip,
)
from meterdesk.devices.commands.repository import params_text
from meterdesk.devices.tables import commands
from meterdesk.metering.tables import meters


def insert_command(
    conn: Connection,
    *,
    organisation_id: int,
    meter_id: int,
    spec: CommandSpec,
    idempotency_key: str,
    actor: str,
    at: datetime,
    deadline_at: datetime,
    max_attempts: int,
    context: Mapping[str, object],
) -> int:
    result = conn.execute(
        insert(commands).values(
            organisation_id=organisation_id,
            meter_id=meter_id,
            kind=spec.kind.value,
            params=params_text(spec, spec.request_hash(meter_id), context),
            status=CommandStatus.PENDING.value,
            reason=None,
            attempts=0,
            max_attempts=max_attempts,
            next_attempt_at=at,
            deadline_at=deadline_at,
            idempotency_key=idempotency_key,
            created_by=actor,
            created_at=at,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    commit_signals.announce(conn, commit_signals.COMMANDS)  # the executor claims it at commit
    return int(key[0])


def lock_meter(conn: Connection, *, organisation_id: int, meter_id: int) -> dict[str, Any] | None:
    """The meter row, locked for the rest of the transaction (PostgreSQL), so commands for one
    meter are created one after the other: supersede and purchase counts never race.

    ``FOR NO KEY UPDATE``, not ``FOR UPDATE``: rows that merely reference the meter (a reading,
    a charge line, its device status) take ``KEY SHARE`` on it, which ``FOR UPDATE`` would wait
    for. A recharge (wallet, then this lock) and an ingest batch of the same meter (readings
    referencing it, then the wallet) would deadlock; two command writers still wait for each
    other."""
    row = (
        conn.execute(
            select(meters.c.id, meters.c.number, meters.c.utility, meters.c.site_id)
            .where(meters.c.id == meter_id, meters.c.organisation_id == organisation_id)
            .with_for_update(key_share=True)
        )
        .mappings()
        .one_or_none()
    )
    return None if row is None else dict(row)


def _open(command_id: int) -> Any:
    return and_(commands.c.id == command_id, commands.c.status.in_(OPEN_STATUSES))


def finish(
    conn: Connection, command_id: int, status: CommandStatus, reason: str | None, at: datetime
) -> bool:
    """Finish an open command; False when it was already finished (e.g. cancelled)."""
    result = conn.execute(
        update(commands)
        .where(_open(command_id))
        .values(
            status=status.value, reason=None if reason is None else clip(reason), finished_at=at
        )
    )
    return result.rowcount == 1


def cancel_unsent(conn: Connection, command_id: int, reason: str, at: datetime) -> bool:
    """Cancel an open command that never went out; False when it was sent (or finished)
    meanwhile. One conditional update: an executor marking it sent at the same moment either
    commits first (then this finds ``sent_at`` set) or waits and finds it cancelled."""
    result = conn.execute(
        update(commands)
        .where(_open(command_id), commands.c.sent_at.is_(None))
        .values(status=CommandStatus.CANCELLED.value, reason=clip(reason), finished_at=at)
    )
    return result.rowcount == 1


def reschedule(conn: Connection, command_id: int, next_at: datetime, reason: str) -> bool:
    result = conn.execute(
        update(commands)
        .where(_open(command_id))
        .values(next_attempt_at=next_at, reason=clip(reason))
    )
    return result.rowcount == 1


def mark_sent(conn: Connection, command: Command, spec: CommandSpec, at: datetime) -> bool:
    """Record that the command is about to go out (before the bytes leave, so a crash can never
    hide a send). A recharge's purchase count, a take-back's count and amount may change only
    while it was never sent."""
    condition = _open(command.id)
    if spec != command.spec:
        condition = and_(condition, commands.c.sent_at.is_(None))
    result = conn.execute(
        update(commands)
        .where(condition)
        .values(
            status=CommandStatus.SENT.value,
            sent_at=func.coalesce(commands.c.sent_at, literal(at, Instant)),
            params=params_text(spec, command.request_hash, command.context),
        )
    )
    return result.rowcount == 1


def record_sent(
    conn: Connection,
    command: Command,
    spec: CommandSpec,
    at: datetime,
    detail: Mapping[str, object],
    meter_count: int | None,
) -> bool:
    """Mark sent and log it (and a recharge's purchase count fixed on its first send)."""
    if not mark_sent(conn, command, spec, at):
        return False
    if spec.purchase_count != command.spec.purchase_count:
        renumbered = {"from": command.spec.purchase_count, "to": spec.purchase_count}
        add_event(conn, command.id, at, "renumbered", {**renumbered, "meter_count": meter_count})
    if spec.take_back_count != command.spec.take_back_count:
        renumbered = {"from": command.spec.take_back_count, "to": spec.take_back_count}
        add_event(conn, command.id, at, "renumbered", {**renumbered, "take_back": True})
    add_event(conn, command.id, at, "sent", detail)
    return True


def record_retry(
    conn: Connection, command_id: int, at: datetime, when: datetime, detail: Mapping[str, object]
) -> None:
    rescheduled = reschedule(conn, command_id, when, str(detail["reason"]))
    add_event(conn, command_id, at, "retry" if rescheduled else "late_result", detail)
