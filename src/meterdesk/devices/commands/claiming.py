"""Claiming due commands for the executor.

Claiming takes due commands with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (two workers never take
the same row; SQLite's ``BEGIN IMMEDIATE`` serialises its one writer) and leases them by moving
``next_attempt_at`` forward, so a worker that dies mid-attempt loses the command to another worker
when the lease runs out.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import Connection, exists, or_, select, update

from meterdesk.devices.commands.event_log import add_event
from meterdesk.devices.commands.model import (
    MONEY_KINDS,
    OPEN_STATUSES,
    Command,
    CommandStatus,
    CommandTarget,
    superseded_by,
)
from meterdesk.devices.commands.repository import for_meters, many, targets
from meterdesk.devices.commands.writes import finish
from meterdesk.devices.tables import commands


def claim(
    conn: Connection,
    *,
    now: datetime,
    limit: int,
    lease: timedelta,
    skip_meters: Collection[int] = (),
) -> list[int]:
    """Take up to ``limit`` due commands and lease them. A money command (recharge or
    take-back) waits while an older money command of the same meter is unfinished: purchases
    and take-backs reach a meter strictly in the order they were made (a take-back "all"
    queued after a push takes what the push brought; one queued before it does not). Commands of
    ``skip_meters`` (meters the caller is still working on) stay where they are: one command
    at a time per meter."""
    older = commands.alias("older")
    money_kinds = [kind.value for kind in MONEY_KINDS]
    earlier_money = exists().where(
        older.c.meter_id == commands.c.meter_id,
        older.c.kind.in_(money_kinds),
        older.c.id < commands.c.id,
        older.c.status.in_(OPEN_STATUSES),
    )
    query = (
        select(commands.c.id)
        .where(
            commands.c.status.in_(OPEN_STATUSES),
            commands.c.next_attempt_at <= now,
            or_(commands.c.kind.not_in(money_kinds), ~earlier_money),
        )
        .order_by(commands.c.next_attempt_at, commands.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=commands)
    )
    if skip_meters:
        query = query.where(commands.c.meter_id.not_in(sorted(skip_meters)))
    ids = [int(i) for i in conn.execute(query).scalars()]
    if ids:
        conn.execute(
            update(commands)
            .where(commands.c.id.in_(ids))
            .values(next_attempt_at=now + lease, attempts=commands.c.attempts + 1)
        )
    return ids


def claim_batch(
    conn: Connection,
    *,
    now: datetime,
    limit: int,
    lease: timedelta,
    skip_meters: Collection[int] = (),
) -> list[tuple[Command, CommandTarget]]:
    """Claim due commands with their targets. A claimed command that a newer open one replaces
    is cancelled here: rows written without ``send_command`` (the control loop's outbox) were
    never superseded when they were created."""
    claimed = claim(conn, now=now, limit=limit, lease=lease, skip_meters=skip_meters)
    found = many(conn, claimed)
    meter_ids = {c.meter_id for c in found}
    rivals = for_meters(conn, meter_ids, OPEN_STATUSES)
    live = []
    for command in found:
        newer = superseded_by(command, rivals)
        if newer is None:
            live.append(command)
        elif finish(conn, command.id, CommandStatus.CANCELLED, f"superseded by #{newer}", now):
            add_event(conn, command.id, now, "cancelled", {"reason": f"superseded by #{newer}"})
    found_targets = targets(conn, meter_ids)
    return [(c, found_targets[c.meter_id]) for c in live]
