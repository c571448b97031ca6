"""Persistence of device commands, their events and what the platform last saw of each meter.

Every status change is a conditional update (``WHERE status IN ('pending', 'sent')``), so a
finished command never changes again and a result that arrives after an operator cancelled the
command is logged, not applied. Claiming takes due commands with ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL (two workers never take the same row; SQLite's ``BEGIN IMMEDIATE`` serialises its one
writer) and leases them by moving ``next_attempt_at`` forward, so a worker that dies mid-attempt
loses the command to another worker when the lease runs out.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Connection,
    RowMapping,
    and_,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)

from meterdesk.db import commit_signals
from meterdesk.db.types import Instant
from meterdesk.devices.commands.model import (
    OPEN_STATUSES,
    Command,
    CommandKind,
    CommandSpec,
    CommandStatus,
    CommandTarget,
    clip,
    split_stored,
    superseded_by,
)
from meterdesk.devices.ports import MeterAddress
from meterdesk.devices.tables import buses, command_events, commands, gateways
from meterdesk.metering.tables import meters

REQUEST_HASH = "request_hash"  # kept beside the parameters in commands.params


def command_from_row(row: RowMapping) -> Command:
    params = json.loads(row["params"])
    request_hash = str(params.pop(REQUEST_HASH, ""))
    spec, context = split_stored(row["kind"], params)
    return Command(
        id=int(row["id"]),
        organisation_id=int(row["organisation_id"]),
        meter_id=int(row["meter_id"]),
        spec=spec,
        status=CommandStatus(row["status"]),
        reason=row["reason"],
        attempts=int(row["attempts"]),
        max_attempts=int(row["max_attempts"]),
        next_attempt_at=row["next_attempt_at"],
        deadline_at=row["deadline_at"],
        idempotency_key=str(row["idempotency_key"]),
        created_by=str(row["created_by"]),
        created_at=row["created_at"],
        request_hash=request_hash or spec.request_hash(int(row["meter_id"])),
        sent_at=row["sent_at"],
        finished_at=row["finished_at"],
        context=context,
    )


def params_text(spec: CommandSpec, request_hash: str, context: Mapping[str, object]) -> str:
    return json.dumps({**context, **spec.to_params(), REQUEST_HASH: request_hash}, sort_keys=True)


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


def find_by_key(conn: Connection, idempotency_key: str) -> Command | None:
    row = (
        conn.execute(select(commands).where(commands.c.idempotency_key == idempotency_key))
        .mappings()
        .one_or_none()
    )
    return None if row is None else command_from_row(row)


def get(conn: Connection, command_id: int, organisation_id: int | None = None) -> Command | None:
    query = select(commands).where(commands.c.id == command_id)
    if organisation_id is not None:
        query = query.where(commands.c.organisation_id == organisation_id)
    row = conn.execute(query).mappings().one_or_none()
    return None if row is None else command_from_row(row)


def many(conn: Connection, command_ids: Iterable[int]) -> list[Command]:
    ids = sorted(set(command_ids))
    if not ids:
        return []
    rows = conn.execute(select(commands).where(commands.c.id.in_(ids)).order_by(commands.c.id))
    return [command_from_row(row) for row in rows.mappings()]


def for_meter(conn: Connection, meter_id: int, statuses: Iterable[str]) -> list[Command]:
    return for_meters(conn, [meter_id], statuses)


def for_meters(
    conn: Connection, meter_ids: Iterable[int], statuses: Iterable[str]
) -> list[Command]:
    rows = conn.execute(
        select(commands)
        .where(
            commands.c.meter_id.in_(sorted(set(meter_ids))), commands.c.status.in_(list(statuses))
        )
        .order_by(commands.c.id)
    )
    return [command_from_row(row) for row in rows.mappings()]


def select_commands(
    conn: Connection,
    *,
    organisation_id: int,
    status: str | None = None,
    meter_id: int | None = None,
    kind: str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[Command]:
    query = select(commands).where(commands.c.organisation_id == organisation_id)
    for column, value in (
        (commands.c.status, status),
        (commands.c.meter_id, meter_id),
        (commands.c.kind, kind),
    ):
        if value is not None:
            query = query.where(column == value)
    if before_id is not None:
        query = query.where(commands.c.id < before_id)
    rows = conn.execute(query.order_by(commands.c.id.desc()).limit(limit))
    return [command_from_row(row) for row in rows.mappings()]


EventRow = tuple[int, datetime, str, Mapping[str, object]]  # command id, at, event, detail


def add_event(
    conn: Connection, command_id: int, at: datetime, event: str, detail: Mapping[str, object]
) -> None:
    add_events(conn, [(command_id, at, event, detail)])


def add_events(conn: Connection, rows: Sequence[EventRow]) -> None:
    """Several events in one statement (a batch of new commands); details encoded as by
    :func:`add_event`, so either path writes the same text."""
    if not rows:
        return
    conn.execute(
        insert(command_events),
        [
            {
                "command_id": command_id,
                "at": at,
                "event": event,
                "detail": json.dumps(dict(detail), ensure_ascii=False, sort_keys=True, default=str),
            }
            for command_id, at, event, detail in rows
        ],
    )


def events(conn: Connection, command_id: int) -> list[tuple[datetime, str, dict[str, Any]]]:
    rows = conn.execute(
        select(command_events.c.at, command_events.c.event, command_events.c.detail)
        .where(command_events.c.command_id == command_id)
        .order_by(command_events.c.id)
    )
    return [(at, str(event), json.loads(detail)) for at, event, detail in rows]


def last_event_detail(conn: Connection, command_id: int, event: str) -> dict[str, Any] | None:
    detail = conn.execute(
        select(command_events.c.detail)
        .where(command_events.c.command_id == command_id, command_events.c.event == event)
        .order_by(command_events.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return None if detail is None else dict(json.loads(detail))


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


def reschedule(conn: Connection, command_id: int, next_at: datetime, reason: str) -> bool:
    result = conn.execute(
        update(commands)
        .where(_open(command_id))
        .values(next_attempt_at=next_at, reason=clip(reason))
    )
    return result.rowcount == 1


def mark_sent(conn: Connection, command: Command, spec: CommandSpec, at: datetime) -> bool:
    """Record that the command is about to go out (before the bytes leave, so a crash can never
    hide a send). A recharge's purchase count may change only while it was never sent."""
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
    add_event(conn, command.id, at, "sent", detail)
    return True


def record_retry(
    conn: Connection, command_id: int, at: datetime, when: datetime, detail: Mapping[str, object]
) -> None:
    rescheduled = reschedule(conn, command_id, when, str(detail["reason"]))
    add_event(conn, command_id, at, "retry" if rescheduled else "late_result", detail)


def claim(
    conn: Connection,
    *,
    now: datetime,
    limit: int,
    lease: timedelta,
    skip_meters: Collection[int] = (),
) -> list[int]:
    """Take up to ``limit`` due commands and lease them. A recharge waits while an older
    recharge of the same meter is unfinished: purchases reach a meter in order. Commands of
    ``skip_meters`` (meters the caller is still working on) stay where they are: one command
    at a time per meter."""
    older = commands.alias("older")
    earlier_push = exists().where(
        older.c.meter_id == commands.c.meter_id,
        older.c.kind == CommandKind.RECHARGE.value,
        older.c.id < commands.c.id,
        older.c.status.in_(OPEN_STATUSES),
    )
    query = (
        select(commands.c.id)
        .where(
            commands.c.status.in_(OPEN_STATUSES),
            commands.c.next_attempt_at <= now,
            or_(commands.c.kind != CommandKind.RECHARGE.value, ~earlier_push),
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


def targets(conn: Connection, meter_ids: Iterable[int]) -> dict[int, CommandTarget]:
    """Where each meter answers. A meter behind an MQTT gateway also gets the gateway's
    ``product_key`` and ``gateway_sn`` in its options: the MQTT driver addresses the gateway."""
    ids = sorted(set(meter_ids))
    if not ids:
        return {}
    rows = conn.execute(
        select(
            meters.c.id,
            meters.c.number,
            meters.c.protocol,
            meters.c.address,
            meters.c.bus_id,
            meters.c.device_options,
            buses.c.transport,
            gateways.c.serial,
            gateways.c.product_key,
        )
        .select_from(meters)
        .outerjoin(buses, buses.c.id == meters.c.bus_id)
        .outerjoin(gateways, gateways.c.id == buses.c.gateway_id)
        .where(meters.c.id.in_(ids))
    )
    result = {}
    for row in rows:
        loaded = json.loads(row.device_options) if row.device_options else {}
        options = {str(k): str(v) for k, v in loaded.items()}
        if row.transport == "mqtt" and row.serial is not None:
            options.setdefault("gateway_sn", str(row.serial))
            options.setdefault("product_key", str(row.product_key or ""))
        address_ = MeterAddress(int(row.id), str(row.protocol), str(row.address), options)
        result[int(row.id)] = CommandTarget(address_, row.bus_id, str(row.number), row.transport)
    return result


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


def highest_purchase(conn: Connection, meter_id: int) -> int | None:
    """The highest purchase count of this meter's pushes that are open or confirmed."""
    pushes = conn.execute(
        select(commands.c.params).where(
            commands.c.meter_id == meter_id,
            commands.c.kind == CommandKind.RECHARGE.value,
            commands.c.status.in_((*OPEN_STATUSES, CommandStatus.CONFIRMED.value)),
        )
    ).scalars()
    counts = [json.loads(text).get("purchase_count") for text in pushes]
    known = [int(count) for count in counts if count is not None]
    return max(known, default=None)


def recharges_for_meter(conn: Connection, meter_id: int) -> list[Command]:
    rows = conn.execute(
        select(commands)
        .where(commands.c.meter_id == meter_id, commands.c.kind == CommandKind.RECHARGE.value)
        .order_by(commands.c.id)
    )
    return [command_from_row(row) for row in rows.mappings()]


def decimal_or_none(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))
