"""Many commands recorded at once, inside the caller's transaction: the control loop's trips and
restores for a whole ingest batch.

Each command ends up exactly as :func:`service.create_in` would leave it — the same row, its
``created`` event, older commands it supersedes cancelled with their event, one audit entry —
but with one statement per kind of row for the whole batch instead of about a dozen per command
(an ingest batch that cuts 200 rooms spent a fifth of its time here). What follows the insert
(event, supersede, audit) is :func:`creation.record_created`, the very code ``create_in`` runs.

Idempotency is kept per command: a key already recorded for the same request is skipped (a
replay), for another request it is an ``IdempotencyConflictError``. The meters are locked in id
order, so two batch writers wait for each other instead of deadlocking. If another transaction
commits one of the keys between our check and our insert, the insert fails as a whole and the
batch falls back to :func:`service.create_in` command by command, which handles that race.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from meterdesk.db import commit_signals
from meterdesk.devices.commands import creation, repository, service
from meterdesk.devices.commands.model import CommandSpec, CommandStatus
from meterdesk.devices.commands.params import parse_context
from meterdesk.devices.tables import commands
from meterdesk.metering.tables import meters
from meterdesk.shared.errors import NotFoundError


@dataclass(frozen=True)
class NewCommand:
    organisation_id: int
    meter_id: int
    spec: CommandSpec
    idempotency_key: str  # as the caller gives it; scoped by organisation here
    deadline_s: int | None = None
    max_attempts: int | None = None
    context: Mapping[str, object] | None = None


@dataclass(frozen=True)
class _Prepared:
    request: NewCommand
    key: str
    deadline_at: datetime
    max_attempts: int
    context: dict[str, object]


def create_many_in(
    conn: Connection, requests: Sequence[NewCommand], *, actor: str, at: datetime
) -> None:
    """Record ``requests`` in order, as :func:`service.create_in` would one after the other."""
    if len(requests) <= 1:
        for request in requests:
            _one(conn, request, actor, at)
        return
    prepared = _new_ones(conn, [_prepare(request, at) for request in requests])
    if not prepared:
        return
    locked = _lock_meters(conn, prepared)
    try:
        with conn.begin_nested():
            ids = _insert(conn, prepared, actor, at)
    except IntegrityError:  # a key committed by someone else a moment ago: go one by one
        for request in requests:
            _one(conn, request, actor, at)
        return
    creation.record_created(
        conn,
        [
            creation.Created(
                item.request.organisation_id,
                item.request.meter_id,
                locked[item.request.meter_id],
                command_id,
                item.request.spec,
            )
            for item, command_id in zip(prepared, ids, strict=True)
        ],
        actor=actor,
        at=at,
    )


def _one(conn: Connection, request: NewCommand, actor: str, at: datetime) -> None:
    service.create_in(
        conn,
        organisation_id=request.organisation_id,
        meter_id=request.meter_id,
        spec=request.spec,
        actor=actor,
        at=at,
        idempotency_key=request.idempotency_key,
        deadline_s=request.deadline_s,
        max_attempts=request.max_attempts,
        context=request.context,
    )


def _prepare(request: NewCommand, at: datetime) -> _Prepared:
    seconds, attempts = service.command_limits(
        request.spec, request.deadline_s, request.max_attempts
    )
    return _Prepared(
        request,
        service.scoped_key(request.organisation_id, request.idempotency_key),
        at + timedelta(seconds=seconds),
        attempts,
        parse_context(request.context, request.spec.kind),
    )


# Built once (building a statement and its cache key cost more than running it): the batch's
# keys already recorded, and its meters locked in id order (see writes.lock_meter).
_RECORDED = select(commands).where(
    commands.c.idempotency_key.in_(bindparam("keys", expanding=True))
)
_LOCK_METERS = (
    select(meters.c.id, meters.c.organisation_id, meters.c.number)
    .where(meters.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(meters.c.id)
    .with_for_update(key_share=True)
)


def _new_ones(conn: Connection, prepared: list[_Prepared]) -> list[_Prepared]:
    """The requests not recorded yet; a key recorded (or repeated in this batch) for another
    request is a conflict, as in :func:`service.create_in`."""
    keys = sorted({item.key for item in prepared})
    rows = conn.execute(_RECORDED, {"keys": keys}).mappings()
    recorded = {str(row["idempotency_key"]): repository.command_from_row(row) for row in rows}
    fresh: dict[str, _Prepared] = {}
    for item in prepared:
        request = item.request
        earlier = recorded.get(item.key)
        if earlier is not None:
            service.check_replay(earlier, request.spec, request.meter_id, request.idempotency_key)
            continue
        twin = fresh.get(item.key)
        if twin is not None:
            same = twin.request.meter_id == request.meter_id and twin.request.spec.request_hash(
                twin.request.meter_id
            ) == request.spec.request_hash(request.meter_id)
            if not same:
                raise service.key_conflict(request.idempotency_key, None)
            continue
        fresh[item.key] = item
    return list(fresh.values())


def _lock_meters(conn: Connection, prepared: list[_Prepared]) -> dict[int, str]:
    """Lock the meters (in id order; see :func:`writes.lock_meter`); their numbers by id."""
    wanted = {item.request.meter_id: item.request.organisation_id for item in prepared}
    rows = conn.execute(_LOCK_METERS, {"ids": sorted(wanted)}).all()
    found = {int(row.id): (int(row.organisation_id), str(row.number)) for row in rows}
    for meter_id, organisation_id in wanted.items():
        if found.get(meter_id, (None,))[0] != organisation_id:
            raise NotFoundError(f"meter {meter_id} not found")
    return {meter_id: number for meter_id, (_, number) in found.items()}


def _insert(conn: Connection, prepared: list[_Prepared], actor: str, at: datetime) -> list[int]:
    rows = [
        {
            "organisation_id": item.request.organisation_id,
            "meter_id": item.request.meter_id,
            "kind": item.request.spec.kind.value,
            "params": repository.params_text(
                item.request.spec,
                item.request.spec.request_hash(item.request.meter_id),
                item.context,
            ),
            "status": CommandStatus.PENDING.value,
            "reason": None,
            "attempts": 0,
            "max_attempts": item.max_attempts,
            "next_attempt_at": at,
            "deadline_at": item.deadline_at,
            "idempotency_key": item.key,
            "created_by": actor,
            "created_at": at,
        }
        for item in prepared
    ]
    result = conn.execute(
        insert(commands).returning(commands.c.id, sort_by_parameter_order=True), rows
    )
    ids = [int(command_id) for command_id in result.scalars()]
    commit_signals.announce(conn, commit_signals.COMMANDS)  # the executor claims them at commit
    return ids
