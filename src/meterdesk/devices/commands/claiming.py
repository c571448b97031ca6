"""Claiming due commands for the executor.

Claiming takes due commands with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (two workers never take
the same row; SQLite's ``BEGIN IMMEDIATE`` serialises its one writer) and leases them by moving
``next_attempt_at`` forward, so a worker that dies mid-attempt loses the command to another worker
when the lease runs out.

One executor works a meter's commands one after the other (``skip_meters``). Several executors
(``meterdesk run`` twice on PostgreSQL) must not act on one meter at once either: a trip
superseded by a restore while its bytes were on the wire would still land after another
executor's close, and that executor could confirm its close from a read taken before the trip
landed. So a claimed command holds its meter (``worked_until``, the lease) until its executor
lets go after the attempt (:func:`release`, at that executor's next claim), and a claim takes no
command of a held meter. Two claims at the same moment are kept apart by locking the meters'
rows with ``SKIP LOCKED`` before looking at the holds again: the second skips the meter.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
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
from meterdesk.metering.tables import meters


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
        select(commands.c.id, commands.c.meter_id)
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
    held = commands.alias("held")
    query = query.where(
        ~exists().where(
            held.c.meter_id == commands.c.meter_id,
            held.c.worked_until > now,
            held.c.id != commands.c.id,
        )
    )
    ids = _meters_free(conn, [(int(i), int(m)) for i, m in conn.execute(query)], now)
    if ids:
        conn.execute(
            update(commands)
            .where(commands.c.id.in_(ids))
            .values(
                next_attempt_at=now + lease,
                worked_until=now + lease,
                attempts=commands.c.attempts + 1,
            )
        )
    return ids


def _meters_free(conn: Connection, found: list[tuple[int, int]], now: datetime) -> list[int]:
    """The commands of ``found`` (id, meter) whose meter this claim could lock and nobody holds.
    The lock (``FOR NO KEY UPDATE SKIP LOCKED``, as command writers take it; nothing on SQLite,
    whose one writer claims alone) makes a concurrent claim skip the meter; the second look at
    the holds, a statement after the lock, sees a hold another claim committed meanwhile."""
    if not found:
        return []
    meter_ids = sorted({meter for _, meter in found})
    locked = set(
        conn.execute(
            select(meters.c.id)
            .where(meters.c.id.in_(meter_ids))
            .order_by(meters.c.id)
            .with_for_update(key_share=True, skip_locked=True)
        ).scalars()
    )
    ids = [command for command, _ in found]
    taken = set(
        conn.execute(
            select(commands.c.meter_id).where(
                commands.c.meter_id.in_(sorted(locked)),
                commands.c.worked_until > now,
                commands.c.id.not_in(ids),
            )
        ).scalars()
    )
    return [command for command, meter in found if meter in locked and meter not in taken]


def release(conn: Connection, held: Iterable[tuple[int, datetime]]) -> None:
    """Let go of commands this executor finished working on: (id, the lease its claim set). A
    command whose lease ran out and that another executor claimed since keeps that one's."""
    for command_id, until in held:
        conn.execute(
            update(commands)
            .where(commands.c.id == command_id, commands.c.worked_until == until)
            .values(worked_until=None)
        )


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
